//! Decoders of every frame payload: the fields of `encode.rs` in the same order, every length
//! and count checked against its limit before anything is allocated, the payload exhausted at
//! the end. Never panics, whatever the bytes.

use super::encode::{from_kv_error, limit};
use super::frame::MessageType;
use super::message::*;
use super::reader::{invalid, PayloadReader};
use super::{
    ErrorCode, WireError, ADDRESS_BYTES_MAX, ENTRIES_PER_APPEND_MAX, ERROR_MESSAGE_BYTES_MAX, SNAPSHOT_BYTES_MAX,
    STATUS_PEERS_MAX, VOTERS_MAX,
};
use crate::kv::codec::Indexed;
use crate::kv::{validate_session, Command, Session, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::limits::CONF_STATE_BYTES_MAX;
use crate::raft::membership::decode_conf_state;
use crate::raft::{Entry, EntryKind, Message, MessageBody, SnapshotMeta};

// ---------------------------------------------------------------------------------------------
// Decoding

pub(super) fn decode_body(message_type: MessageType, reader: &mut PayloadReader) -> Result<FrameBody, WireError> {
    Ok(match message_type {
        MessageType::Hello => FrameBody::Hello(Hello {
            role: decode_role(reader.u8("role")?)?,
            cluster_id: reader.u64("cluster_id")?,
            node_id: reader.u64("node_id")?,
            protocol_version: reader.u8("protocol_version")?,
        }),
        MessageType::HelloOk => FrameBody::HelloOk(HelloOk {
            cluster_id: reader.u64("cluster_id")?,
            node_id: reader.u64("node_id")?,
            protocol_version: reader.u8("protocol_version")?,
        }),
        MessageType::Error => FrameBody::Error(ErrorReply {
            code: ErrorCode::from_u16(reader.u16("code")?),
            message: reader.string("message", ERROR_MESSAGE_BYTES_MAX)?,
        }),
        MessageType::PreVote
        | MessageType::PreVoteResponse
        | MessageType::RequestVote
        | MessageType::RequestVoteResponse
        | MessageType::AppendEntries
        | MessageType::AppendEntriesResponse
        | MessageType::Heartbeat
        | MessageType::HeartbeatResponse
        | MessageType::LogLost
        | MessageType::TimeoutNow => FrameBody::Peer(decode_peer(message_type, reader)?),
        MessageType::SnapshotChunk => FrameBody::SnapshotChunk(decode_chunk(reader)?),
        MessageType::Set
        | MessageType::Get
        | MessageType::Delete
        | MessageType::CompareAndSwap
        | MessageType::Status
        | MessageType::RegisterClient
        | MessageType::MemberList
        | MessageType::MemberChange
        | MessageType::TransferLeader => FrameBody::Request(decode_request(message_type, reader)?),
        MessageType::Ok
        | MessageType::Value
        | MessageType::NotFound
        | MessageType::CasFailed
        | MessageType::StatusReport
        | MessageType::NotLeader
        | MessageType::Registered
        | MessageType::Members => FrameBody::Reply(decode_reply(message_type, reader)?),
    })
}

pub(super) fn decode_peer(message_type: MessageType, reader: &mut PayloadReader) -> Result<Message, WireError> {
    let from = reader.u64("from")?;
    let to = reader.u64("to")?;
    let term = reader.u64("term")?;
    let body = match message_type {
        MessageType::PreVote => MessageBody::PreVote {
            last_log_index: reader.u64("last_log_index")?,
            last_log_term: reader.u64("last_log_term")?,
        },
        MessageType::RequestVote => MessageBody::RequestVote {
            last_log_index: reader.u64("last_log_index")?,
            last_log_term: reader.u64("last_log_term")?,
            transfer: reader.bool("transfer")?,
        },
        MessageType::TimeoutNow => MessageBody::TimeoutNow,
        MessageType::PreVoteResponse => MessageBody::PreVoteResponse { granted: reader.bool("granted")? },
        MessageType::RequestVoteResponse => MessageBody::RequestVoteResponse { granted: reader.bool("granted")? },
        MessageType::AppendEntries => decode_append(reader)?,
        MessageType::AppendEntriesResponse => MessageBody::AppendEntriesResponse {
            reject: reader.bool("reject")?,
            index: reader.u64("index")?,
            reject_hint_index: reader.u64("reject_hint_index")?,
            reject_hint_term: reader.u64("reject_hint_term")?,
        },
        MessageType::Heartbeat => {
            MessageBody::Heartbeat { commit: reader.u64("commit")?, read_seq: reader.u64("read_seq")? }
        }
        MessageType::LogLost => {
            MessageBody::LogLost { last_index: reader.u64("last_index")?, last_term: reader.u64("last_term")? }
        }
        _ => MessageBody::HeartbeatResponse { read_seq: reader.u64("read_seq")? },
    };
    Ok(Message { from, to, term, body })
}

/// Smallest encoded entry: index, term, kind, empty data.
const ENTRY_BYTES_MIN: usize = 8 + 8 + 1 + 4;

pub(super) fn decode_append(reader: &mut PayloadReader) -> Result<MessageBody, WireError> {
    let prev_log_index = reader.u64("prev_log_index")?;
    let prev_log_term = reader.u64("prev_log_term")?;
    let leader_commit = reader.u64("leader_commit")?;
    let count = reader.count("entries", ENTRIES_PER_APPEND_MAX, ENTRY_BYTES_MIN)?;
    let mut entries = Vec::with_capacity(count);
    for index in 0..count {
        let field = |name| Indexed { list: "entries", index, field: name };
        let entry_index = reader.u64(field("index"))?;
        let term = reader.u64(field("term"))?;
        let kind_code = reader.u8(field("kind"))?;
        let kind = EntryKind::from_u8(kind_code).ok_or_else(|| {
            invalid(field("kind"), format!("{kind_code} is not an entry kind (0 normal, 1 noop, 2 conf change)"))
        })?;
        let data = reader.bytes(field("data"), usize::MAX)?;
        entries.push(Entry { index: entry_index, term, kind, data });
    }
    Ok(MessageBody::AppendEntries { prev_log_index, prev_log_term, leader_commit, entries })
}

pub(super) fn decode_chunk(reader: &mut PayloadReader) -> Result<SnapshotChunk, WireError> {
    let from = reader.u64("from")?;
    let to = reader.u64("to")?;
    let term = reader.u64("term")?;
    let index = reader.u64("meta.index")?;
    let meta_term = reader.u64("meta.term")?;
    let conf_bytes = reader.bytes("meta.conf", CONF_STATE_BYTES_MAX)?;
    let conf = decode_conf_state(&conf_bytes).map_err(|e| invalid("meta.conf", e))?;
    let chunk = SnapshotChunk {
        from,
        to,
        term,
        meta: SnapshotMeta { index, term: meta_term, conf },
        offset: reader.u64("offset")?,
        total_bytes: reader.u64("total_bytes")?,
        data: reader.bytes("data", usize::MAX)?,
        done: reader.bool("done")?,
    };
    validate_chunk(&chunk)?;
    Ok(chunk)
}

/// The arithmetic every chunk satisfies: it lies inside the snapshot and `done` marks the end.
pub(super) fn validate_chunk(chunk: &SnapshotChunk) -> Result<(), WireError> {
    let conf = &chunk.meta.conf;
    for set in [&conf.voters, &conf.voters_outgoing, &conf.learners, &conf.learners_next] {
        limit("meta.conf", set.len(), VOTERS_MAX)?;
    }
    limit("meta.conf.addresses", conf.addresses.len(), crate::limits::MEMBERS_MAX)?;
    if chunk.total_bytes > SNAPSHOT_BYTES_MAX {
        return Err(WireError::LimitExceeded {
            field: "total_bytes".to_string(),
            len: chunk.total_bytes,
            max: SNAPSHOT_BYTES_MAX,
        });
    }
    let end = chunk.offset.checked_add(chunk.data.len() as u64);
    match end {
        Some(end) if end <= chunk.total_bytes => {
            if chunk.done != (end == chunk.total_bytes) {
                return Err(invalid(
                    "done",
                    format!("is {} but the chunk ends at {end} of {}", chunk.done, chunk.total_bytes),
                ));
            }
            Ok(())
        }
        _ => Err(invalid(
            "offset",
            format!("chunk {}+{} runs past total_bytes {}", chunk.offset, chunk.data.len(), chunk.total_bytes),
        )),
    }
}

pub(super) fn decode_request(
    message_type: MessageType,
    reader: &mut PayloadReader,
) -> Result<ClientRequest, WireError> {
    let command = match message_type {
        MessageType::Get => {
            let consistency = decode_consistency(reader.u8("consistency")?)?;
            return Ok(ClientRequest::Get { key: reader.bytes("key", KEY_BYTES_MAX)?, consistency });
        }
        MessageType::Status if reader.remaining() == 0 => return Ok(ClientRequest::Status),
        MessageType::Status => {
            return match reader.u8("detail")? {
                super::message::STATUS_DETAIL_EXTENDED => Ok(ClientRequest::StatusDetailed),
                other => Err(invalid("detail", format!("{other} is not a known detail level (1)"))),
            };
        }
        MessageType::RegisterClient => return Ok(ClientRequest::RegisterClient),
        MessageType::MemberList => return Ok(ClientRequest::MemberList),
        MessageType::MemberChange => return Ok(ClientRequest::MemberChange(super::members::decode_changes(reader)?)),
        MessageType::TransferLeader => return Ok(ClientRequest::TransferLeader { to: reader.u64("to")? }),
        MessageType::Set => {
            let session = decode_session(reader)?;
            let key = reader.bytes("key", KEY_BYTES_MAX)?;
            Command::Set { session, key, value: reader.bytes("value", VALUE_BYTES_MAX)? }
        }
        MessageType::Delete => {
            let session = decode_session(reader)?;
            Command::Delete { session, key: reader.bytes("key", KEY_BYTES_MAX)? }
        }
        _ => {
            let session = decode_session(reader)?;
            let key = reader.bytes("key", KEY_BYTES_MAX)?;
            let expected = reader.optional_bytes("expected", VALUE_BYTES_MAX)?;
            Command::Cas { session, key, expected, new: reader.bytes("new", VALUE_BYTES_MAX)? }
        }
    };
    Ok(ClientRequest::Write(command))
}

/// `session_id`, `seq`, `first_outstanding`, checked as the state machine would: a frame with
/// session id 0, seq 0 or `first_outstanding` outside `1..=seq` is malformed.
pub(super) fn decode_session(reader: &mut PayloadReader) -> Result<Session, WireError> {
    let session = Session {
        session_id: reader.u64("session_id")?,
        seq: reader.u64("seq")?,
        first_outstanding: reader.u64("first_outstanding")?,
    };
    validate_session(&session).map_err(from_kv_error)?;
    Ok(session)
}

pub(super) fn decode_reply(message_type: MessageType, reader: &mut PayloadReader) -> Result<ClientReply, WireError> {
    Ok(match message_type {
        MessageType::Ok => ClientReply::Ok,
        MessageType::NotFound => ClientReply::NotFound,
        MessageType::Value => ClientReply::Value(reader.bytes("value", VALUE_BYTES_MAX)?),
        MessageType::CasFailed => {
            ClientReply::CasFailed { current: reader.optional_bytes("current", VALUE_BYTES_MAX)? }
        }
        MessageType::NotLeader => ClientReply::NotLeader {
            leader_id: reader.u64("leader_id")?,
            leader_addr: reader.string("leader_addr", ADDRESS_BYTES_MAX)?,
        },
        MessageType::Members => ClientReply::Members(super::members::decode_report(reader)?),
        MessageType::Registered => match reader.u64("session_id")? {
            0 => return Err(invalid("session_id", "0 is not a valid session id".to_string())),
            session_id => ClientReply::Registered { session_id },
        },
        _ => ClientReply::Status(decode_status(reader)?),
    })
}

pub(super) fn decode_status(reader: &mut PayloadReader) -> Result<StatusReport, WireError> {
    let node_id = reader.u64("node_id")?;
    let role = decode_node_role(reader.u8("role")?)?;
    let mut status = StatusReport {
        node_id,
        role,
        term: reader.u64("term")?,
        leader_id: reader.u64("leader_id")?,
        commit_index: reader.u64("commit_index")?,
        applied_index: reader.u64("applied_index")?,
        last_log_index: reader.u64("last_log_index")?,
        log_size_bytes: reader.u64("log_size_bytes")?,
        snapshot_index: reader.u64("snapshot_index")?,
        snapshot_term: reader.u64("snapshot_term")?,
        peers: Vec::new(),
        http_addr: None,
    };
    let count = reader.count("peers", STATUS_PEERS_MAX, 24)?;
    status.peers.reserve_exact(count);
    for index in 0..count {
        let field = |name| Indexed { list: "peers", index, field: name };
        status.peers.push(PeerStatus {
            node_id: reader.u64(field("node_id"))?,
            match_index: reader.u64(field("match_index"))?,
            next_index: reader.u64(field("next_index"))?,
        });
    }
    // The extension (§7.2) follows only in answer to a detailed request.
    if reader.remaining() > 0 {
        status.http_addr = Some(reader.string("http_addr", ADDRESS_BYTES_MAX)?);
    }
    Ok(status)
}

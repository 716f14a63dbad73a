//! Encoders of every frame payload, in the field order `protocol.md` documents. Encoders refuse
//! what a decoder would refuse (`validate_for_encode`), so a frame we send is a frame we accept.

use bytes::{BufMut, Bytes, BytesMut};

use super::decode::validate_chunk;
use super::message::*;
use super::{WireError, ADDRESS_BYTES_MAX, ENTRIES_PER_APPEND_MAX, ERROR_MESSAGE_BYTES_MAX, STATUS_PEERS_MAX};
use crate::kv::{KvError, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::raft::membership::encode_conf_state;
use crate::raft::{Entry, Message, MessageBody};

// ---------------------------------------------------------------------------------------------
// Encoding

pub(super) fn limit(field: &str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::LimitExceeded { field: field.to_string(), len: len as u64, max: max as u64 });
    }
    Ok(())
}

pub(super) fn from_kv_error(error: KvError) -> WireError {
    match error {
        KvError::LimitExceeded { field, len, max } => WireError::LimitExceeded { field, len, max },
        KvError::InvalidField { field, reason } => WireError::InvalidField { field, reason },
        other => WireError::InvalidField { field: "command".to_string(), reason: other.to_string() },
    }
}

/// Refuses anything the decoder on the other side would refuse.
pub(super) fn validate_for_encode(body: &FrameBody) -> Result<(), WireError> {
    match body {
        FrameBody::Error(error) => limit("message", error.message.len(), ERROR_MESSAGE_BYTES_MAX),
        FrameBody::Peer(Message { body: MessageBody::AppendEntries { entries, .. }, .. }) => {
            limit("entries", entries.len(), ENTRIES_PER_APPEND_MAX)
        }
        FrameBody::SnapshotChunk(chunk) => validate_chunk(chunk),
        FrameBody::Request(ClientRequest::Write(command)) if command.is_write() => {
            command.validate().map_err(from_kv_error)
        }
        FrameBody::Reply(ClientReply::Registered { session_id: 0 }) => {
            Err(super::reader::invalid("session_id", "0 is not a valid session id".to_string()))
        }
        FrameBody::Request(ClientRequest::Get { key, .. }) => limit("key", key.len(), KEY_BYTES_MAX),
        FrameBody::Request(ClientRequest::MemberChange(changes)) => super::members::validate_changes(changes),
        FrameBody::Reply(ClientReply::Members(report)) => super::members::validate_report(report),
        FrameBody::Reply(ClientReply::Value(value)) => limit("value", value.len(), VALUE_BYTES_MAX),
        FrameBody::Reply(ClientReply::CasFailed { current }) => {
            limit("current", current.as_ref().map_or(0, Bytes::len), VALUE_BYTES_MAX)
        }
        FrameBody::Reply(ClientReply::Status(status)) => {
            limit("peers", status.peers.len(), STATUS_PEERS_MAX)?;
            limit("http_addr", status.http_addr.as_ref().map_or(0, String::len), ADDRESS_BYTES_MAX)
        }
        FrameBody::Reply(ClientReply::NotLeader { leader_addr, .. }) => {
            limit("leader_addr", leader_addr.len(), ADDRESS_BYTES_MAX)
        }
        _ => Ok(()),
    }
}

pub(super) fn body_bytes_hint(body: &FrameBody) -> usize {
    match body {
        FrameBody::Peer(Message { body: MessageBody::AppendEntries { entries, .. }, .. }) => {
            entries.iter().map(Entry::size_bytes).sum()
        }
        FrameBody::SnapshotChunk(chunk) => chunk.data.len() + 64 + chunk.meta.conf.addresses.len() * 64,
        FrameBody::Request(ClientRequest::Write(command)) => command.fields_len(),
        FrameBody::Reply(ClientReply::Value(value)) => value.len(),
        _ => 64,
    }
}

pub(super) fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

pub(super) fn put_optional_bytes(out: &mut BytesMut, bytes: Option<&Bytes>) {
    match bytes {
        None => out.put_u8(0),
        Some(bytes) => {
            out.put_u8(1);
            put_bytes(out, bytes);
        }
    }
}

pub(super) fn encode_body(body: &FrameBody, out: &mut BytesMut) {
    match body {
        FrameBody::Hello(hello) => {
            out.put_u8(role_code(hello.role));
            out.put_u64(hello.cluster_id);
            out.put_u64(hello.node_id);
            out.put_u8(hello.protocol_version);
        }
        FrameBody::HelloOk(ok) => {
            out.put_u64(ok.cluster_id);
            out.put_u64(ok.node_id);
            out.put_u8(ok.protocol_version);
        }
        FrameBody::Error(error) => {
            out.put_u16(error.code.to_u16());
            put_bytes(out, error.message.as_bytes());
        }
        FrameBody::Peer(message) => encode_peer(message, out),
        FrameBody::SnapshotChunk(chunk) => encode_chunk(chunk, out),
        FrameBody::Request(request) => encode_request(request, out),
        FrameBody::Reply(reply) => encode_reply(reply, out),
    }
}

pub(super) fn encode_peer(message: &Message, out: &mut BytesMut) {
    out.put_u64(message.from);
    out.put_u64(message.to);
    out.put_u64(message.term);
    match &message.body {
        MessageBody::PreVote { last_log_index, last_log_term } => {
            out.put_u64(*last_log_index);
            out.put_u64(*last_log_term);
        }
        MessageBody::RequestVote { last_log_index, last_log_term, transfer } => {
            out.put_u64(*last_log_index);
            out.put_u64(*last_log_term);
            out.put_u8(u8::from(*transfer));
        }
        MessageBody::TimeoutNow => {}
        MessageBody::PreVoteResponse { granted } | MessageBody::RequestVoteResponse { granted } => {
            out.put_u8(u8::from(*granted));
        }
        MessageBody::AppendEntries { prev_log_index, prev_log_term, leader_commit, entries } => {
            out.put_u64(*prev_log_index);
            out.put_u64(*prev_log_term);
            out.put_u64(*leader_commit);
            out.put_u32(entries.len() as u32);
            for entry in entries {
                out.put_u64(entry.index);
                out.put_u64(entry.term);
                out.put_u8(entry.kind.to_u8());
                put_bytes(out, &entry.data);
            }
        }
        MessageBody::AppendEntriesResponse { reject, index, reject_hint_index, reject_hint_term } => {
            out.put_u8(u8::from(*reject));
            out.put_u64(*index);
            out.put_u64(*reject_hint_index);
            out.put_u64(*reject_hint_term);
        }
        MessageBody::Heartbeat { commit, read_seq } => {
            out.put_u64(*commit);
            out.put_u64(*read_seq);
        }
        MessageBody::HeartbeatResponse { read_seq } => out.put_u64(*read_seq),
        MessageBody::LogLost { last_index, last_term } => {
            out.put_u64(*last_index);
            out.put_u64(*last_term);
        }
        // Refused by `Frame::message_type` (SnapshotMustBeChunked) before any byte is written.
        MessageBody::InstallSnapshot { .. } => {}
    }
}

pub(super) fn encode_chunk(chunk: &SnapshotChunk, out: &mut BytesMut) {
    out.put_u64(chunk.from);
    out.put_u64(chunk.to);
    out.put_u64(chunk.term);
    out.put_u64(chunk.meta.index);
    out.put_u64(chunk.meta.term);
    put_bytes(out, &encode_conf_state(&chunk.meta.conf));
    out.put_u64(chunk.offset);
    out.put_u64(chunk.total_bytes);
    put_bytes(out, &chunk.data);
    out.put_u8(u8::from(chunk.done));
}

pub(super) fn encode_request(request: &ClientRequest, out: &mut BytesMut) {
    match request {
        // The fields after the command's tag are exactly the request payload (protocol.md §9.1).
        ClientRequest::Write(command) => command.encode_fields(out),
        ClientRequest::RegisterClient => {}
        ClientRequest::Get { key, consistency } => {
            out.put_u8(consistency_code(*consistency));
            put_bytes(out, key);
        }
        ClientRequest::Status => {}
        ClientRequest::StatusDetailed => out.put_u8(super::message::STATUS_DETAIL_EXTENDED),
        ClientRequest::MemberList => {}
        ClientRequest::MemberChange(changes) => super::members::encode_changes(changes, out),
        ClientRequest::TransferLeader { to } => out.put_u64(*to),
    }
}

pub(super) fn encode_reply(reply: &ClientReply, out: &mut BytesMut) {
    match reply {
        ClientReply::Ok | ClientReply::NotFound => {}
        ClientReply::Value(value) => put_bytes(out, value),
        ClientReply::CasFailed { current } => put_optional_bytes(out, current.as_ref()),
        ClientReply::Status(status) => {
            out.put_u64(status.node_id);
            out.put_u8(node_role_code(status.role));
            for value in [
                status.term,
                status.leader_id,
                status.commit_index,
                status.applied_index,
                status.last_log_index,
                status.log_size_bytes,
                status.snapshot_index,
                status.snapshot_term,
            ] {
                out.put_u64(value);
            }
            out.put_u32(status.peers.len() as u32);
            for peer in &status.peers {
                out.put_u64(peer.node_id);
                out.put_u64(peer.match_index);
                out.put_u64(peer.next_index);
            }
            if let Some(http_addr) = &status.http_addr {
                put_bytes(out, http_addr.as_bytes());
            }
        }
        ClientReply::NotLeader { leader_id, leader_addr } => {
            out.put_u64(*leader_id);
            put_bytes(out, leader_addr.as_bytes());
        }
        ClientReply::Registered { session_id } => out.put_u64(*session_id),
        ClientReply::Members(report) => super::members::encode_report(report, out),
    }
}

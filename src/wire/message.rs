//! Typed frames: what each message type's payload means, and its encoder and decoder.
//!
//! The field order of every encoder below is the field order documented in `protocol.md`; the
//! decoder reads the same fields in the same order and then requires the payload to be exhausted.
//! Encoders refuse values a decoder would refuse (oversized keys, too many entries, a frame above
//! [`MAX_FRAME_BYTES`](super::MAX_FRAME_BYTES)), so a frame we send is a frame we accept.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{finish_frame, start_frame, MessageType, RawFrame};
use super::reader::{invalid, PayloadReader};
use super::{
    ErrorCode, WireError, MAX_ADDRESS_BYTES, MAX_APPEND_ENTRIES, MAX_ERROR_MESSAGE_BYTES, MAX_SNAPSHOT_BYTES,
    MAX_STATUS_PEERS, MAX_VOTERS, PROTOCOL_VERSION,
};
use crate::kv::codec::Indexed;
use crate::kv::{Command, KvError, Session, WriteResult, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::raft::{ConfState, Entry, EntryKind, Message, MessageBody, NodeId, SnapshotMeta, Term};

/// One frame: the request id from the header and the typed payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Chosen by whoever sends a request; a reply carries the id of the request it answers.
    pub request_id: u64,
    pub body: FrameBody,
}

/// Everything a frame can carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameBody {
    Hello(Hello),
    HelloOk(HelloOk),
    Error(ErrorReply),
    /// A peer message. Every body except `InstallSnapshot`, which travels as [`SnapshotChunk`]s.
    Peer(Message),
    SnapshotChunk(SnapshotChunk),
    Request(ClientRequest),
    Reply(ClientReply),
}

impl FrameBody {
    /// A short name for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            FrameBody::Hello(_) => "Hello",
            FrameBody::HelloOk(_) => "HelloOk",
            FrameBody::Error(_) => "Error",
            FrameBody::Peer(m) => m.body.name(),
            FrameBody::SnapshotChunk(_) => "SnapshotChunk",
            FrameBody::Request(_) => "client request",
            FrameBody::Reply(_) => "client reply",
        }
    }
}

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Peer,
}

/// The first frame on every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub role: Role,
    pub cluster_id: u64,
    /// The sender's node id; 0 for clients.
    pub node_id: NodeId,
    pub protocol_version: u8,
}

/// The server's answer to an acceptable [`Hello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloOk {
    pub cluster_id: u64,
    /// The answering server's node id.
    pub node_id: NodeId,
    pub protocol_version: u8,
}

/// An `Error` frame: a code a program acts on and a message a person reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        let mut message = message.into();
        truncate_utf8(&mut message, MAX_ERROR_MESSAGE_BYTES);
        ErrorReply { code, message }
    }

    /// The `Error` frame a server sends for a frame it could not decode.
    pub fn from_wire_error(error: &WireError) -> ErrorReply {
        ErrorReply::new(error.error_code(), error.to_string())
    }
}

fn truncate_utf8(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// Checks a client's or peer's [`Hello`] against this node's cluster. On `Err` the server sends the
/// returned `Error` frame and closes the connection. Whether a peer's `node_id` belongs to the
/// configuration is for the server to check.
pub fn check_hello(hello: &Hello, cluster_id: u64) -> Result<(), ErrorReply> {
    if hello.protocol_version != PROTOCOL_VERSION {
        let message =
            format!("unsupported protocol version {}; this node speaks {PROTOCOL_VERSION}", hello.protocol_version);
        return Err(ErrorReply::new(ErrorCode::UnsupportedVersion, message));
    }
    if hello.cluster_id != cluster_id {
        let message =
            format!("cluster id {:#018x} does not match this node's cluster {cluster_id:#018x}", hello.cluster_id);
        return Err(ErrorReply::new(ErrorCode::ClusterMismatch, message));
    }
    match (hello.role, hello.node_id) {
        (Role::Client, 0) => Ok(()),
        (Role::Client, id) => {
            Err(ErrorReply::new(ErrorCode::BadHello, format!("a client hello must carry node id 0, not {id}")))
        }
        (Role::Peer, 0) => Err(ErrorReply::new(ErrorCode::BadHello, "a peer hello must carry its non-zero node id")),
        (Role::Peer, _) => Ok(()),
    }
}

/// One piece of an `InstallSnapshot` message. Bytes `offset..offset + data.len()` of the snapshot
/// image whose total size is `total_bytes`; `done` is set on the last chunk (and only there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub total_bytes: u64,
    pub data: Bytes,
    pub done: bool,
}

/// Whether a `Get` may be answered from a possibly stale local copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReadConsistency {
    /// Served by the leader after a ReadIndex round: sees every write acknowledged before it.
    #[default]
    Linearizable,
    /// Served by whichever node receives it from its applied state; may be stale.
    Local,
}

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// `Set`, `Delete` or `CompareAndSwap`, by the command's variant. The command is exactly what the
    /// server proposes to the log.
    Write(Command),
    Get {
        key: Bytes,
        consistency: ReadConsistency,
    },
    Status,
}

/// A node's role in a status report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeRole {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Replication progress of one peer, as the leader sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    pub node_id: NodeId,
    pub match_index: u64,
    pub next_index: u64,
}

/// The answer to `Status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    pub node_id: NodeId,
    pub role: NodeRole,
    pub term: Term,
    /// 0 when unknown.
    pub leader_id: NodeId,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub log_size_bytes: u64,
    pub snapshot_index: u64,
    pub snapshot_term: Term,
    /// Filled in by a leader; empty otherwise.
    pub peers: Vec<PeerStatus>,
}

/// A reply to a client request (errors travel as [`FrameBody::Error`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientReply {
    /// The write took effect (`Set`, successful `CompareAndSwap`, `Delete` of a present key).
    Ok,
    Value(Bytes),
    /// `Get` of an absent key, or `Delete` of an absent key (the delete is still committed).
    NotFound,
    /// `CompareAndSwap` found `current` instead of the expected value (`None`: absent).
    CasFailed {
        current: Option<Bytes>,
    },
    Status(StatusReport),
    /// This node is not the leader. `leader_id` 0 and an empty address mean "unknown".
    NotLeader {
        leader_id: NodeId,
        leader_addr: String,
    },
}

impl ClientReply {
    /// The reply for a write result from the state machine.
    pub fn from_write_result(result: &WriteResult) -> ClientReply {
        match result {
            WriteResult::Stored | WriteResult::CasOk | WriteResult::Deleted { existed: true } => ClientReply::Ok,
            WriteResult::Deleted { existed: false } => ClientReply::NotFound,
            WriteResult::CasFailed { current } => ClientReply::CasFailed { current: current.clone() },
        }
    }
}

impl Frame {
    pub fn new(request_id: u64, body: FrameBody) -> Frame {
        Frame { request_id, body }
    }

    /// The type byte this frame is sent with.
    pub fn message_type(&self) -> Result<MessageType, WireError> {
        Ok(match &self.body {
            FrameBody::Hello(_) => MessageType::Hello,
            FrameBody::HelloOk(_) => MessageType::HelloOk,
            FrameBody::Error(_) => MessageType::Error,
            FrameBody::Peer(message) => peer_message_type(&message.body)?,
            FrameBody::SnapshotChunk(_) => MessageType::SnapshotChunk,
            FrameBody::Request(ClientRequest::Write(Command::Set { .. })) => MessageType::Set,
            FrameBody::Request(ClientRequest::Write(Command::Delete { .. })) => MessageType::Delete,
            FrameBody::Request(ClientRequest::Write(Command::Cas { .. })) => MessageType::CompareAndSwap,
            FrameBody::Request(ClientRequest::Get { .. }) => MessageType::Get,
            FrameBody::Request(ClientRequest::Status) => MessageType::Status,
            FrameBody::Reply(ClientReply::Ok) => MessageType::Ok,
            FrameBody::Reply(ClientReply::Value(_)) => MessageType::Value,
            FrameBody::Reply(ClientReply::NotFound) => MessageType::NotFound,
            FrameBody::Reply(ClientReply::CasFailed { .. }) => MessageType::CasFailed,
            FrameBody::Reply(ClientReply::Status(_)) => MessageType::StatusReport,
            FrameBody::Reply(ClientReply::NotLeader { .. }) => MessageType::NotLeader,
        })
    }

    /// Appends the whole frame (length prefix included) to `out`. On error `out` is unchanged.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), WireError> {
        let message_type = self.message_type()?;
        validate_for_encode(&self.body)?;
        out.reserve(body_bytes_hint(&self.body) + 32);
        let start = start_frame(out, message_type, self.request_id);
        encode_body(&self.body, out);
        finish_frame(out, start)
    }

    /// The encoded frame as a fresh buffer.
    pub fn to_bytes(&self) -> Result<Bytes, WireError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// Parses the payload of a frame produced by [`FrameDecoder`](super::FrameDecoder).
    pub fn decode(raw: RawFrame) -> Result<Frame, WireError> {
        let mut reader = PayloadReader::new(raw.payload, raw.message_type.name());
        let body = decode_body(raw.message_type, &mut reader)?;
        reader.finish()?;
        Ok(Frame { request_id: raw.request_id, body })
    }
}

fn peer_message_type(body: &MessageBody) -> Result<MessageType, WireError> {
    Ok(match body {
        MessageBody::PreVote { .. } => MessageType::PreVote,
        MessageBody::PreVoteResponse { .. } => MessageType::PreVoteResponse,
        MessageBody::RequestVote { .. } => MessageType::RequestVote,
        MessageBody::RequestVoteResponse { .. } => MessageType::RequestVoteResponse,
        MessageBody::AppendEntries { .. } => MessageType::AppendEntries,
        MessageBody::AppendEntriesResponse { .. } => MessageType::AppendEntriesResponse,
        MessageBody::Heartbeat { .. } => MessageType::Heartbeat,
        MessageBody::HeartbeatResponse { .. } => MessageType::HeartbeatResponse,
        MessageBody::InstallSnapshot { .. } => return Err(WireError::SnapshotMustBeChunked),
    })
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn limit(field: &str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::LimitExceeded { field: field.to_string(), len: len as u64, max: max as u64 });
    }
    Ok(())
}

fn from_kv_error(error: KvError) -> WireError {
    match error {
        KvError::LimitExceeded { field, len, max } => WireError::LimitExceeded { field, len, max },
        other => WireError::InvalidField { field: "command".to_string(), reason: other.to_string() },
    }
}

/// Refuses anything the decoder on the other side would refuse.
fn validate_for_encode(body: &FrameBody) -> Result<(), WireError> {
    match body {
        FrameBody::Error(error) => limit("message", error.message.len(), MAX_ERROR_MESSAGE_BYTES),
        FrameBody::Peer(Message { body: MessageBody::AppendEntries { entries, .. }, .. }) => {
            limit("entries", entries.len(), MAX_APPEND_ENTRIES)
        }
        FrameBody::SnapshotChunk(chunk) => validate_chunk(chunk),
        FrameBody::Request(ClientRequest::Write(command)) => command.validate().map_err(from_kv_error),
        FrameBody::Request(ClientRequest::Get { key, .. }) => limit("key", key.len(), MAX_KEY_BYTES),
        FrameBody::Reply(ClientReply::Value(value)) => limit("value", value.len(), MAX_VALUE_BYTES),
        FrameBody::Reply(ClientReply::CasFailed { current }) => {
            limit("current", current.as_ref().map_or(0, Bytes::len), MAX_VALUE_BYTES)
        }
        FrameBody::Reply(ClientReply::Status(status)) => limit("peers", status.peers.len(), MAX_STATUS_PEERS),
        FrameBody::Reply(ClientReply::NotLeader { leader_addr, .. }) => {
            limit("leader_addr", leader_addr.len(), MAX_ADDRESS_BYTES)
        }
        _ => Ok(()),
    }
}

fn body_bytes_hint(body: &FrameBody) -> usize {
    match body {
        FrameBody::Peer(Message { body: MessageBody::AppendEntries { entries, .. }, .. }) => {
            entries.iter().map(Entry::size_bytes).sum()
        }
        FrameBody::SnapshotChunk(chunk) => chunk.data.len() + chunk.meta.conf.voters.len() * 8,
        FrameBody::Request(ClientRequest::Write(command)) => command.encoded_len(),
        FrameBody::Reply(ClientReply::Value(value)) => value.len(),
        _ => 64,
    }
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn put_optional_bytes(out: &mut BytesMut, bytes: Option<&Bytes>) {
    match bytes {
        None => out.put_u8(0),
        Some(bytes) => {
            out.put_u8(1);
            put_bytes(out, bytes);
        }
    }
}

fn encode_body(body: &FrameBody, out: &mut BytesMut) {
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

fn encode_peer(message: &Message, out: &mut BytesMut) {
    out.put_u64(message.from);
    out.put_u64(message.to);
    out.put_u64(message.term);
    match &message.body {
        MessageBody::PreVote { last_log_index, last_log_term }
        | MessageBody::RequestVote { last_log_index, last_log_term } => {
            out.put_u64(*last_log_index);
            out.put_u64(*last_log_term);
        }
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
        // Refused by `Frame::message_type` (SnapshotMustBeChunked) before any byte is written.
        MessageBody::InstallSnapshot { .. } => {}
    }
}

fn encode_chunk(chunk: &SnapshotChunk, out: &mut BytesMut) {
    out.put_u64(chunk.from);
    out.put_u64(chunk.to);
    out.put_u64(chunk.term);
    out.put_u64(chunk.meta.index);
    out.put_u64(chunk.meta.term);
    out.put_u32(chunk.meta.conf.voters.len() as u32);
    for voter in &chunk.meta.conf.voters {
        out.put_u64(*voter);
    }
    out.put_u64(chunk.offset);
    out.put_u64(chunk.total_bytes);
    put_bytes(out, &chunk.data);
    out.put_u8(u8::from(chunk.done));
}

fn encode_request(request: &ClientRequest, out: &mut BytesMut) {
    match request {
        ClientRequest::Write(command) => {
            let session = command.session();
            out.put_u64(session.client_id);
            out.put_u64(session.seq);
            put_bytes(out, command.key());
            match command {
                Command::Set { value, .. } => put_bytes(out, value),
                Command::Delete { .. } => {}
                Command::Cas { expected, new, .. } => {
                    put_optional_bytes(out, expected.as_ref());
                    put_bytes(out, new);
                }
            }
        }
        ClientRequest::Get { key, consistency } => {
            out.put_u8(consistency_code(*consistency));
            put_bytes(out, key);
        }
        ClientRequest::Status => {}
    }
}

fn encode_reply(reply: &ClientReply, out: &mut BytesMut) {
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
        }
        ClientReply::NotLeader { leader_id, leader_addr } => {
            out.put_u64(*leader_id);
            put_bytes(out, leader_addr.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

fn decode_body(message_type: MessageType, reader: &mut PayloadReader) -> Result<FrameBody, WireError> {
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
            message: reader.string("message", MAX_ERROR_MESSAGE_BYTES)?,
        }),
        MessageType::PreVote
        | MessageType::PreVoteResponse
        | MessageType::RequestVote
        | MessageType::RequestVoteResponse
        | MessageType::AppendEntries
        | MessageType::AppendEntriesResponse
        | MessageType::Heartbeat
        | MessageType::HeartbeatResponse => FrameBody::Peer(decode_peer(message_type, reader)?),
        MessageType::SnapshotChunk => FrameBody::SnapshotChunk(decode_chunk(reader)?),
        MessageType::Set
        | MessageType::Get
        | MessageType::Delete
        | MessageType::CompareAndSwap
        | MessageType::Status => FrameBody::Request(decode_request(message_type, reader)?),
        MessageType::Ok
        | MessageType::Value
        | MessageType::NotFound
        | MessageType::CasFailed
        | MessageType::StatusReport
        | MessageType::NotLeader => FrameBody::Reply(decode_reply(message_type, reader)?),
    })
}

fn decode_peer(message_type: MessageType, reader: &mut PayloadReader) -> Result<Message, WireError> {
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
        },
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
        _ => MessageBody::HeartbeatResponse { read_seq: reader.u64("read_seq")? },
    };
    Ok(Message { from, to, term, body })
}

/// Smallest encoded entry: index, term, kind, empty data.
const ENTRY_BYTES_MIN: usize = 8 + 8 + 1 + 4;

fn decode_append(reader: &mut PayloadReader) -> Result<MessageBody, WireError> {
    let prev_log_index = reader.u64("prev_log_index")?;
    let prev_log_term = reader.u64("prev_log_term")?;
    let leader_commit = reader.u64("leader_commit")?;
    let count = reader.count("entries", MAX_APPEND_ENTRIES, ENTRY_BYTES_MIN)?;
    let mut entries = Vec::with_capacity(count);
    for index in 0..count {
        let field = |name| Indexed { list: "entries", index, field: name };
        let entry_index = reader.u64(field("index"))?;
        let term = reader.u64(field("term"))?;
        let kind_code = reader.u8(field("kind"))?;
        let kind = EntryKind::from_u8(kind_code)
            .ok_or_else(|| invalid(field("kind"), format!("{kind_code} is not an entry kind (0 normal, 1 noop)")))?;
        let data = reader.bytes(field("data"), usize::MAX)?;
        entries.push(Entry { index: entry_index, term, kind, data });
    }
    Ok(MessageBody::AppendEntries { prev_log_index, prev_log_term, leader_commit, entries })
}

fn decode_chunk(reader: &mut PayloadReader) -> Result<SnapshotChunk, WireError> {
    let from = reader.u64("from")?;
    let to = reader.u64("to")?;
    let term = reader.u64("term")?;
    let index = reader.u64("meta.index")?;
    let meta_term = reader.u64("meta.term")?;
    let voter_count = reader.count("meta.voters", MAX_VOTERS, 8)?;
    let mut voters = Vec::with_capacity(voter_count);
    for index in 0..voter_count {
        voters.push(reader.u64(Indexed { list: "meta.voters", index, field: "id" })?);
    }
    let chunk = SnapshotChunk {
        from,
        to,
        term,
        meta: SnapshotMeta { index, term: meta_term, conf: ConfState { voters } },
        offset: reader.u64("offset")?,
        total_bytes: reader.u64("total_bytes")?,
        data: reader.bytes("data", usize::MAX)?,
        done: reader.bool("done")?,
    };
    validate_chunk(&chunk)?;
    Ok(chunk)
}

/// The arithmetic every chunk satisfies: it lies inside the snapshot and `done` marks the end.
fn validate_chunk(chunk: &SnapshotChunk) -> Result<(), WireError> {
    limit("meta.voters", chunk.meta.conf.voters.len(), MAX_VOTERS)?;
    if chunk.total_bytes > MAX_SNAPSHOT_BYTES {
        return Err(WireError::LimitExceeded {
            field: "total_bytes".to_string(),
            len: chunk.total_bytes,
            max: MAX_SNAPSHOT_BYTES,
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

fn decode_request(message_type: MessageType, reader: &mut PayloadReader) -> Result<ClientRequest, WireError> {
    let command = match message_type {
        MessageType::Get => {
            let consistency = decode_consistency(reader.u8("consistency")?)?;
            return Ok(ClientRequest::Get { key: reader.bytes("key", MAX_KEY_BYTES)?, consistency });
        }
        MessageType::Status => return Ok(ClientRequest::Status),
        MessageType::Set => {
            let session = decode_session(reader)?;
            let key = reader.bytes("key", MAX_KEY_BYTES)?;
            Command::Set { session, key, value: reader.bytes("value", MAX_VALUE_BYTES)? }
        }
        MessageType::Delete => {
            let session = decode_session(reader)?;
            Command::Delete { session, key: reader.bytes("key", MAX_KEY_BYTES)? }
        }
        _ => {
            let session = decode_session(reader)?;
            let key = reader.bytes("key", MAX_KEY_BYTES)?;
            let expected = reader.optional_bytes("expected", MAX_VALUE_BYTES)?;
            Command::Cas { session, key, expected, new: reader.bytes("new", MAX_VALUE_BYTES)? }
        }
    };
    Ok(ClientRequest::Write(command))
}

fn decode_session(reader: &mut PayloadReader) -> Result<Session, WireError> {
    let client_id = reader.u64("client_id")?;
    if client_id == 0 {
        return Err(invalid("client_id", "0 is not a valid client id".to_string()));
    }
    let seq = reader.u64("seq")?;
    if seq == 0 {
        return Err(invalid("seq", "sequence numbers start at 1".to_string()));
    }
    Ok(Session { client_id, seq })
}

fn decode_reply(message_type: MessageType, reader: &mut PayloadReader) -> Result<ClientReply, WireError> {
    Ok(match message_type {
        MessageType::Ok => ClientReply::Ok,
        MessageType::NotFound => ClientReply::NotFound,
        MessageType::Value => ClientReply::Value(reader.bytes("value", MAX_VALUE_BYTES)?),
        MessageType::CasFailed => {
            ClientReply::CasFailed { current: reader.optional_bytes("current", MAX_VALUE_BYTES)? }
        }
        MessageType::NotLeader => ClientReply::NotLeader {
            leader_id: reader.u64("leader_id")?,
            leader_addr: reader.string("leader_addr", MAX_ADDRESS_BYTES)?,
        },
        _ => ClientReply::Status(decode_status(reader)?),
    })
}

fn decode_status(reader: &mut PayloadReader) -> Result<StatusReport, WireError> {
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
    };
    let count = reader.count("peers", MAX_STATUS_PEERS, 24)?;
    status.peers.reserve_exact(count);
    for index in 0..count {
        let field = |name| Indexed { list: "peers", index, field: name };
        status.peers.push(PeerStatus {
            node_id: reader.u64(field("node_id"))?,
            match_index: reader.u64(field("match_index"))?,
            next_index: reader.u64(field("next_index"))?,
        });
    }
    Ok(status)
}

// ---------------------------------------------------------------------------------------------
// Enumeration codes

fn role_code(role: Role) -> u8 {
    match role {
        Role::Client => 1,
        Role::Peer => 2,
    }
}

fn decode_role(code: u8) -> Result<Role, WireError> {
    match code {
        1 => Ok(Role::Client),
        2 => Ok(Role::Peer),
        other => Err(invalid("role", format!("{other} is not a role (1 client, 2 peer)"))),
    }
}

fn consistency_code(consistency: ReadConsistency) -> u8 {
    match consistency {
        ReadConsistency::Linearizable => 0,
        ReadConsistency::Local => 1,
    }
}

fn decode_consistency(code: u8) -> Result<ReadConsistency, WireError> {
    match code {
        0 => Ok(ReadConsistency::Linearizable),
        1 => Ok(ReadConsistency::Local),
        other => Err(invalid("consistency", format!("{other} is not a read consistency (0 linearizable, 1 local)"))),
    }
}

fn node_role_code(role: NodeRole) -> u8 {
    match role {
        NodeRole::Follower => 1,
        NodeRole::PreCandidate => 2,
        NodeRole::Candidate => 3,
        NodeRole::Leader => 4,
    }
}

fn decode_node_role(code: u8) -> Result<NodeRole, WireError> {
    match code {
        1 => Ok(NodeRole::Follower),
        2 => Ok(NodeRole::PreCandidate),
        3 => Ok(NodeRole::Candidate),
        4 => Ok(NodeRole::Leader),
        other => Err(invalid("role", format!("{other} is not a node role (1..=4)"))),
    }
}

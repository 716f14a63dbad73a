//! Typed frames: what each message type's payload means. The byte layout lives in `encode.rs`
//! and `decode.rs`.
//!
//! The field order of every encoder below is the field order documented in `protocol.md`; the
//! decoder reads the same fields in the same order and then requires the payload to be exhausted.
//! Encoders refuse values a decoder would refuse (oversized keys, too many entries, a frame above
//! [`FRAME_BYTES_MAX`](super::FRAME_BYTES_MAX)), so a frame we send is a frame we accept.

use bytes::{Bytes, BytesMut};

use super::decode::decode_body;
use super::encode::{body_bytes_hint, encode_body, validate_for_encode};
use super::frame::{finish_frame, start_frame, MessageType, RawFrame};
use super::members::MembersReport;
use super::reader::{invalid, PayloadReader};
use super::{ErrorCode, WireError, ERROR_MESSAGE_BYTES_MAX, PROTOCOL_VERSION};
use crate::kv::{Command, WriteResult};
use crate::raft::membership::MemberChange;
use crate::raft::{Message, MessageBody, NodeId, SnapshotMeta, Term};

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
        truncate_utf8(&mut message, ERROR_MESSAGE_BYTES_MAX);
        ErrorReply { code, message }
    }

    /// The `Error` frame a server sends for a frame it could not decode.
    pub fn from_wire_error(error: &WireError) -> ErrorReply {
        ErrorReply::new(error.error_code(), error.to_string())
    }
}

pub(super) fn truncate_utf8(text: &mut String, max: usize) {
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
    /// Open a session (`protocol.md` §7.1): the leader commits a registration, whose log index is
    /// the session id it answers with [`ClientReply::Registered`].
    RegisterClient,
    Get {
        key: Bytes,
        consistency: ReadConsistency,
    },
    Status,
    /// `Status` asking for the report's extension (`protocol.md` §7.2): on the wire a `Status`
    /// frame whose payload is the single byte `0x01`. A node older than the extension refuses it
    /// as malformed (trailing bytes); [`Client::status_detailed`](crate::client::Client) then
    /// asks again with a plain `Status`.
    StatusDetailed,
    /// The members of the configuration in force (`protocol.md` §7.6); the leader answers.
    MemberList,
    /// Change the members in one joint step; answered once the change completed (committed,
    /// joint phase left, applied on the leader).
    MemberChange(Vec<MemberChange>),
    /// Hand leadership to `to` (0: the most caught-up voter); answered once it moved.
    TransferLeader {
        to: NodeId,
    },
}

/// The `detail` byte of a `Status` request that asks for the report's extension.
pub const STATUS_DETAIL_EXTENDED: u8 = 1;

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
    /// Extension (`protocol.md` §7.2), sent only to a [`ClientRequest::StatusDetailed`]: the
    /// address of the node's HTTP listener (`/metrics`, `/status`, `/health`), `Some("")` if it
    /// has none. `None`: the report carried no extension (a plain `Status`, or an older node).
    pub http_addr: Option<String>,
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
    /// The answer to `RegisterClient`: the new session's id (the index of its registration).
    Registered {
        session_id: u64,
    },
    /// The answer to the membership requests (§7.6).
    Members(MembersReport),
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
            FrameBody::Request(ClientRequest::Write(Command::Register { .. })) => {
                return Err(WireError::InvalidField {
                    field: "command".to_string(),
                    reason: "a registration is proposed by the leader; a client sends RegisterClient".to_string(),
                })
            }
            FrameBody::Request(ClientRequest::RegisterClient) => MessageType::RegisterClient,
            FrameBody::Request(ClientRequest::Get { .. }) => MessageType::Get,
            FrameBody::Request(ClientRequest::Status | ClientRequest::StatusDetailed) => MessageType::Status,
            FrameBody::Request(ClientRequest::MemberList) => MessageType::MemberList,
            FrameBody::Request(ClientRequest::MemberChange(_)) => MessageType::MemberChange,
            FrameBody::Request(ClientRequest::TransferLeader { .. }) => MessageType::TransferLeader,
            FrameBody::Reply(ClientReply::Members(_)) => MessageType::Members,
            FrameBody::Reply(ClientReply::Ok) => MessageType::Ok,
            FrameBody::Reply(ClientReply::Value(_)) => MessageType::Value,
            FrameBody::Reply(ClientReply::NotFound) => MessageType::NotFound,
            FrameBody::Reply(ClientReply::CasFailed { .. }) => MessageType::CasFailed,
            FrameBody::Reply(ClientReply::Status(_)) => MessageType::StatusReport,
            FrameBody::Reply(ClientReply::NotLeader { .. }) => MessageType::NotLeader,
            FrameBody::Reply(ClientReply::Registered { .. }) => MessageType::Registered,
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

pub(super) fn peer_message_type(body: &MessageBody) -> Result<MessageType, WireError> {
    Ok(match body {
        MessageBody::PreVote { .. } => MessageType::PreVote,
        MessageBody::PreVoteResponse { .. } => MessageType::PreVoteResponse,
        MessageBody::RequestVote { .. } => MessageType::RequestVote,
        MessageBody::RequestVoteResponse { .. } => MessageType::RequestVoteResponse,
        MessageBody::AppendEntries { .. } => MessageType::AppendEntries,
        MessageBody::AppendEntriesResponse { .. } => MessageType::AppendEntriesResponse,
        MessageBody::Heartbeat { .. } => MessageType::Heartbeat,
        MessageBody::HeartbeatResponse { .. } => MessageType::HeartbeatResponse,
        MessageBody::LogLost { .. } => MessageType::LogLost,
        MessageBody::TimeoutNow => MessageType::TimeoutNow,
        MessageBody::InstallSnapshot { .. } => return Err(WireError::SnapshotMustBeChunked),
    })
}

// ---------------------------------------------------------------------------------------------
// Enumeration codes

pub(super) fn role_code(role: Role) -> u8 {
    match role {
        Role::Client => 1,
        Role::Peer => 2,
    }
}

pub(super) fn decode_role(code: u8) -> Result<Role, WireError> {
    match code {
        1 => Ok(Role::Client),
        2 => Ok(Role::Peer),
        other => Err(invalid("role", format!("{other} is not a role (1 client, 2 peer)"))),
    }
}

pub(super) fn consistency_code(consistency: ReadConsistency) -> u8 {
    match consistency {
        ReadConsistency::Linearizable => 0,
        ReadConsistency::Local => 1,
    }
}

pub(super) fn decode_consistency(code: u8) -> Result<ReadConsistency, WireError> {
    match code {
        0 => Ok(ReadConsistency::Linearizable),
        1 => Ok(ReadConsistency::Local),
        other => Err(invalid("consistency", format!("{other} is not a read consistency (0 linearizable, 1 local)"))),
    }
}

pub(super) fn node_role_code(role: NodeRole) -> u8 {
    match role {
        NodeRole::Follower => 1,
        NodeRole::PreCandidate => 2,
        NodeRole::Candidate => 3,
        NodeRole::Leader => 4,
    }
}

pub(super) fn decode_node_role(code: u8) -> Result<NodeRole, WireError> {
    match code {
        1 => Ok(NodeRole::Follower),
        2 => Ok(NodeRole::PreCandidate),
        3 => Ok(NodeRole::Candidate),
        4 => Ok(NodeRole::Leader),
        other => Err(invalid("role", format!("{other} is not a node role (1..=4)"))),
    }
}

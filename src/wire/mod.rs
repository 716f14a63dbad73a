//! Frames and message encoding: bytes in, values out. No I/O.
//!
//! This module is the single source of truth for the byte layout that `protocol.md` documents; the
//! two must agree field for field (a test checks the worked examples in `protocol.md` against the
//! encoder). Pieces:
//!
//! - [`FrameDecoder`]: a streaming decoder. Feed it bytes as they arrive; it yields [`RawFrame`]s
//!   (header parsed, payload a zero-copy slice) and refuses a bad length, version or type as soon as
//!   those header bytes arrive, before it buffers the frame's body.
//! - [`Frame`] / [`FrameBody`]: typed frames. [`Frame::encode`] appends one whole frame to a
//!   `BytesMut`; [`Frame::decode`] parses a `RawFrame`'s payload.
//! - [`SnapshotChunk`]: a piece of a snapshot image streamed from a leader (the transfer itself is
//!   the server's: `server::snapshot_transfer`).
//!
//! Invariants:
//! - Decoding never panics, whatever the input, and never allocates more than the bytes it was given
//!   plus element counts capped by named limits (`MAX_*` below).
//! - Every limit is enforced on both sides: the encoder refuses what the decoder would refuse.
//! - A frame on the wire is at most [`FRAME_BYTES_MAX`] after its 4-byte length prefix.
//! - Integers are big-endian. Byte strings are a `u32` length then the bytes.

mod decode;
mod encode;
mod error;
mod frame;
mod members;
mod message;
mod reader;

#[cfg(test)]
mod tests;

pub use crate::limits::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
pub use error::{ErrorCode, WireError};
pub use frame::{FrameDecoder, MessageType, RawFrame};
pub use members::{MemberStatus, MembersReport};
pub use message::{
    check_hello, ClientReply, ClientRequest, ErrorReply, Frame, FrameBody, Hello, HelloOk, NodeRole, PeerStatus,
    ReadConsistency, Role, SnapshotChunk, StatusReport,
};

/// The protocol version this code speaks: byte 4 of every frame (after the length prefix) and
/// `Hello.protocol_version`. Version 2 added sessions registered through the log.
pub const PROTOCOL_VERSION: u8 = 3;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Bytes of the fixed header counted by the length prefix: version (1), type (1), request id (8).
pub const FRAME_HEADER_BYTES: usize = 10;

pub use crate::limits::{ENTRIES_PER_APPEND_MAX, FRAME_BYTES_MAX, SNAPSHOT_BYTES_MAX, VOTERS_MAX};

/// Most peers in a status report.
pub const STATUS_PEERS_MAX: usize = 256;

/// Longest `Error` message, in bytes of UTF-8. [`ErrorReply::new`] truncates to fit.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 4 * 1024;

/// Longest leader address in `NotLeader` (and any member address), in bytes of UTF-8.
pub use crate::limits::ADDRESS_BYTES_MAX;

/// Largest data chunk in one `SnapshotChunk` frame (8 MiB, well under the frame limit).
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The chunk size a sender should use unless it has a reason not to (1 MiB).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

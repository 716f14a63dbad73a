//! [`WireError`]: why bytes could not be decoded (or a value encoded), and [`ErrorCode`]: the
//! numeric codes carried by an `Error` frame.

use std::fmt;

/// A decode or encode failure. Display strings are meant for logs and for the message of the `Error`
/// frame a server sends before it closes the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The length prefix (or an encoded frame) is larger than the maximum frame size.
    FrameTooLarge {
        length: u64,
        max: usize,
    },
    /// The length prefix is smaller than the fixed header (version, type, request id).
    FrameTooShort {
        length: u32,
    },
    UnsupportedVersion(u8),
    UnknownMessageType(u8),
    /// The payload ended inside `field`.
    Truncated {
        field: String,
        needed: usize,
        left: usize,
    },
    /// Bytes remained after the last field of `message`.
    TrailingBytes {
        message: &'static str,
        count: usize,
    },
    /// A field holds a value that is not allowed.
    InvalidField {
        field: String,
        reason: String,
    },
    /// A length or element count is above its documented limit.
    LimitExceeded {
        field: String,
        len: u64,
        max: u64,
    },
    /// `Message::InstallSnapshot` has no frame of its own; send it as `SnapshotChunk` frames.
    SnapshotMustBeChunked,
    /// A snapshot chunk does not continue the snapshot being assembled.
    SnapshotChunkOutOfOrder {
        expected_offset: u64,
        offset: u64,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::FrameTooLarge { length, max } => write!(f, "frame length {length} exceeds maximum {max}"),
            WireError::FrameTooShort { length } => {
                write!(f, "frame length {length} is below the minimum {}", super::FRAME_HEADER_BYTES)
            }
            WireError::UnsupportedVersion(version) => {
                write!(f, "unsupported protocol version {version}; this node speaks {}", super::PROTOCOL_VERSION)
            }
            WireError::UnknownMessageType(code) => write!(f, "unknown message type 0x{code:02x}"),
            WireError::Truncated { field, needed, left } => {
                write!(f, "truncated payload: field `{field}` needs {needed} bytes, {left} left")
            }
            WireError::TrailingBytes { message, count } => {
                write!(f, "trailing bytes: {count} after the last field of {message}")
            }
            WireError::InvalidField { field, reason } => write!(f, "invalid field `{field}`: {reason}"),
            WireError::LimitExceeded { field, len, max } => {
                write!(f, "field `{field}` is {len}, above the limit {max}")
            }
            WireError::SnapshotMustBeChunked => {
                write!(f, "InstallSnapshot has no frame of its own: send it as SnapshotChunk frames")
            }
            WireError::SnapshotChunkOutOfOrder { expected_offset, offset } => {
                write!(f, "snapshot chunk at offset {offset} but the next expected offset is {expected_offset}")
            }
        }
    }
}

impl std::error::Error for WireError {}

impl WireError {
    /// The code a server puts in the `Error` frame it sends before closing the connection.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            WireError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            WireError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            WireError::UnknownMessageType(_) => ErrorCode::UnknownMessageType,
            WireError::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            WireError::SnapshotChunkOutOfOrder { .. } => ErrorCode::UnexpectedMessage,
            WireError::FrameTooShort { .. }
            | WireError::Truncated { .. }
            | WireError::TrailingBytes { .. }
            | WireError::InvalidField { .. }
            | WireError::SnapshotMustBeChunked => ErrorCode::MalformedFrame,
        }
    }
}

/// The `u16` code of an `Error` frame. `protocol.md` says what a client does with each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    MalformedFrame,
    UnsupportedVersion,
    FrameTooLarge,
    UnknownMessageType,
    LimitExceeded,
    HandshakeRequired,
    ClusterMismatch,
    BadHello,
    UnexpectedMessage,
    SessionExpired,
    StaleSequence,
    Overloaded,
    OutcomeUnknown,
    ShuttingDown,
    Internal,
    SessionWindowFull,
    /// A membership change or transfer was refused (a change in flight, a lagging learner, an
    /// unknown node, a transfer that timed out); the message says which.
    MembershipRefused,
    /// A code this version does not know; kept so that it can be logged and re-encoded as is.
    Unknown(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::MalformedFrame => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::FrameTooLarge => 3,
            ErrorCode::UnknownMessageType => 4,
            ErrorCode::LimitExceeded => 5,
            ErrorCode::HandshakeRequired => 6,
            ErrorCode::ClusterMismatch => 7,
            ErrorCode::BadHello => 8,
            ErrorCode::UnexpectedMessage => 9,
            ErrorCode::SessionExpired => 10,
            ErrorCode::StaleSequence => 11,
            ErrorCode::Overloaded => 12,
            ErrorCode::OutcomeUnknown => 13,
            ErrorCode::ShuttingDown => 14,
            ErrorCode::Internal => 15,
            ErrorCode::SessionWindowFull => 16,
            ErrorCode::MembershipRefused => 17,
            ErrorCode::Unknown(code) => code,
        }
    }

    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::MalformedFrame,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::FrameTooLarge,
            4 => ErrorCode::UnknownMessageType,
            5 => ErrorCode::LimitExceeded,
            6 => ErrorCode::HandshakeRequired,
            7 => ErrorCode::ClusterMismatch,
            8 => ErrorCode::BadHello,
            9 => ErrorCode::UnexpectedMessage,
            10 => ErrorCode::SessionExpired,
            11 => ErrorCode::StaleSequence,
            12 => ErrorCode::Overloaded,
            13 => ErrorCode::OutcomeUnknown,
            14 => ErrorCode::ShuttingDown,
            15 => ErrorCode::Internal,
            16 => ErrorCode::SessionWindowFull,
            17 => ErrorCode::MembershipRefused,
            other => ErrorCode::Unknown(other),
        }
    }

    /// Whether the server closes the connection after sending this code in answer to a request.
    /// (Any error in answer to a `Hello` is followed by a close, `Overloaded` included: that
    /// connection never got past its handshake.)
    pub fn closes_connection(self) -> bool {
        !matches!(
            self,
            ErrorCode::SessionExpired
                | ErrorCode::StaleSequence
                | ErrorCode::Overloaded
                | ErrorCode::OutcomeUnknown
                | ErrorCode::SessionWindowFull
                | ErrorCode::MembershipRefused
        )
    }
}

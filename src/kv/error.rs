//! Errors from decoding commands and snapshot images, and from applying out of order.

use std::fmt;

use crate::raft::Index;

/// Why a command, a snapshot image or an apply call was refused. Every variant says which field or
/// which index, so a person reading a log line can find the bad byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// The input ended inside `field`.
    Truncated { field: String, needed: usize, left: usize },
    /// Bytes remained after the last field.
    TrailingBytes { count: usize },
    /// The first byte of a command is not a known command tag.
    UnknownCommandTag(u8),
    /// The payload is a protocol-1 write (random client id, no `first_outstanding`). This version
    /// does not apply it: [`KvStore::apply`](super::KvStore::apply) returns this as an error, so
    /// the node stops instead of silently dropping (or misreading) a write that was acknowledged.
    RetiredCommandTag(u8),
    /// A length field is above its limit.
    LimitExceeded { field: String, len: u64, max: u64 },
    /// A field holds a value that is not allowed (for example a client id of 0).
    InvalidField { field: String, reason: String },
    /// The snapshot image does not start with the magic bytes.
    BadMagic,
    /// The snapshot image has a format version this code does not read.
    UnsupportedSnapshotVersion(u8),
    /// The snapshot image was written by protocol 1 (format version 1), whose sessions this
    /// version refuses to convert (see `snapshot.rs`).
    RetiredSnapshotVersion(u8),
    /// The snapshot image's CRC-32 trailer does not match its contents.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// `apply` was called with an index that is not `applied_index + 1`. State is unchanged.
    IndexNotNext { applied: Index, index: Index },
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::Truncated { field, needed, left } => {
                write!(f, "truncated: field `{field}` needs {needed} bytes, {left} left")
            }
            KvError::TrailingBytes { count } => write!(f, "trailing bytes: {count} after the last field"),
            KvError::UnknownCommandTag(tag) => write!(f, "unknown command tag 0x{tag:02x}"),
            KvError::RetiredCommandTag(tag) => write!(
                f,
                "command tag 0x{tag:02x} is a protocol-1 write, which this version (protocol 2) does not apply: \
                 the data directory was written by an older mini-raft; read its keys out with that version"
            ),
            KvError::LimitExceeded { field, len, max } => {
                write!(f, "field `{field}` is {len}, above the limit {max}")
            }
            KvError::InvalidField { field, reason } => write!(f, "invalid field `{field}`: {reason}"),
            KvError::BadMagic => write!(f, "not a kv snapshot image (bad magic)"),
            KvError::UnsupportedSnapshotVersion(v) => write!(f, "unsupported kv snapshot format version {v}"),
            KvError::RetiredSnapshotVersion(v) => write!(
                f,
                "kv snapshot format version {v} was written by protocol-1 mini-raft; its sessions (random client \
                 ids) cannot be carried over safely, so this version refuses it: read the keys out with the older \
                 version"
            ),
            KvError::ChecksumMismatch { stored, computed } => {
                write!(f, "kv snapshot checksum mismatch: stored 0x{stored:08x}, computed 0x{computed:08x}")
            }
            KvError::IndexNotNext { applied, index } => {
                write!(
                    f,
                    "apply at index {index} but applied index is {applied}: expected {}",
                    applied.saturating_add(1)
                )
            }
        }
    }
}

impl std::error::Error for KvError {}

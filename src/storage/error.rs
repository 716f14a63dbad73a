//! The one error type of the storage layer. Every variant that concerns bytes on disk names the
//! file and, where it applies, the byte offset, so that an operator can find the damage with
//! `raft-dump` or a hex editor.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in `storage`. `Display` is the operator-facing message.
#[derive(Debug)]
pub enum StorageError {
    /// An operating-system call failed. `op` says what we were doing ("open", "msync", ...).
    Io { op: &'static str, path: PathBuf, source: io::Error },
    /// Bytes on disk are not what we wrote: bad CRC, impossible field, index gap, bad sequence.
    /// Recovery refuses to continue past one of these (except a torn tail; see `wal`).
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// The first segment is damaged before its first valid record (its header): no part of the
    /// log can be trusted. The node layer treats the whole log as lost (protocol-aware recovery).
    Unsalvageable { path: PathBuf, offset: u64, reason: String },
    /// A segment file is missing from the middle of the sequence.
    MissingSegment { dir: PathBuf, missing_seq: u64, next_path: PathBuf },
    /// The requested index was compacted into a snapshot.
    Compacted { index: u64, first_index: u64 },
    /// The requested index is past the end of the log.
    Unavailable { index: u64, last_index: u64 },
    /// A caller broke an API contract (non-contiguous batch, oversized entry, ...).
    Invalid(String),
    /// Another process holds the directory lock.
    Locked { path: PathBuf },
    /// An earlier write or sync failed; the WAL (or meta store) refuses every later call, because
    /// after a failed fsync nothing about the unsynced data may be assumed (see `wal`).
    Poisoned { reason: String },
    /// The data directory belongs to another node or cluster.
    WrongNode { path: PathBuf, found_cluster: u64, found_node: u64, cluster: u64, node: u64 },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> StorageError {
        StorageError::Io { op, path: path.to_path_buf(), source }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt { path: path.to_path_buf(), offset, reason: reason.into() }
    }

    /// True for errors that mean the data on disk is damaged (the node must not start).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StorageError::Corrupt { .. } | StorageError::Unsalvageable { .. } | StorageError::MissingSegment { .. }
        )
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { op, path, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            StorageError::Corrupt { path, offset, reason } => {
                write!(f, "corrupt data in {} at offset {offset}: {reason}", path.display())
            }
            StorageError::Unsalvageable { path, offset, reason } => write!(
                f,
                "corrupt data in {} at offset {offset}: {reason}; nothing of the log can be salvaged",
                path.display()
            ),
            StorageError::MissingSegment { dir, missing_seq, next_path } => write!(
                f,
                "segment {missing_seq} is missing in {} (next present: {}); refusing to serve a log with a hole",
                dir.display(),
                next_path.display()
            ),
            StorageError::Compacted { index, first_index } => {
                write!(f, "index {index} is compacted (first index is {first_index})")
            }
            StorageError::Unavailable { index, last_index } => {
                write!(f, "index {index} is past the last index {last_index}")
            }
            StorageError::Invalid(msg) => write!(f, "invalid storage call: {msg}"),
            StorageError::Locked { path } => write!(
                f,
                "{} is locked by another process (is a node already running on this directory?)",
                path.display()
            ),
            StorageError::Poisoned { reason } => {
                write!(f, "storage refuses further use after an earlier failure: {reason}")
            }
            StorageError::WrongNode { path, found_cluster, found_node, cluster, node } => write!(
                f,
                "data directory {} belongs to node {found_node} of cluster {found_cluster}, not node {node} of cluster {cluster}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

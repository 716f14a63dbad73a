//! Streaming `InstallSnapshot` as [`SnapshotChunk`] frames, and reassembling it.
//!
//! The sender cuts the snapshot image into chunks of at most [`SNAPSHOT_CHUNK_BYTES_MAX`] (zero-copy
//! slices of the image) with [`snapshot_chunks`]. The receiver keeps one [`SnapshotAssembler`] per
//! peer connection; it accepts chunks strictly in order and hands back the whole
//! `Message::InstallSnapshot` when the chunk with `done` arrives, so the core never sees a partial
//! snapshot. A chunk at offset 0 always starts over (a new leader, or a leader that restarted the
//! transfer). Memory held is at most the snapshot's `total_bytes` (≤ [`SNAPSHOT_BYTES_MAX`]) and
//! grows only as data arrives, never from the announced total.

use bytes::BytesMut;

use super::{SnapshotChunk, WireError, SNAPSHOT_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MAX};
use crate::raft::{Message, MessageBody, NodeId, Snapshot, Term};

/// Cuts `snapshot` into chunks of `chunk_bytes` (clamped to `1..=SNAPSHOT_CHUNK_BYTES_MAX`). An empty
/// image still yields one chunk (empty, `done`). Fails only if the image exceeds
/// [`SNAPSHOT_BYTES_MAX`].
pub fn snapshot_chunks(
    from: NodeId,
    to: NodeId,
    term: Term,
    snapshot: &Snapshot,
    chunk_bytes: usize,
) -> Result<Vec<SnapshotChunk>, WireError> {
    let total = snapshot.data.len();
    if total as u64 > SNAPSHOT_BYTES_MAX {
        return Err(WireError::LimitExceeded {
            field: "total_bytes".into(),
            len: total as u64,
            max: SNAPSHOT_BYTES_MAX,
        });
    }
    let chunk_bytes = chunk_bytes.clamp(1, SNAPSHOT_CHUNK_BYTES_MAX);
    let mut chunks = Vec::with_capacity(total.div_ceil(chunk_bytes).max(1));
    let mut offset = 0;
    loop {
        let end = total.min(offset + chunk_bytes);
        chunks.push(SnapshotChunk {
            from,
            to,
            term,
            meta: snapshot.meta.clone(),
            offset: offset as u64,
            total_bytes: total as u64,
            data: snapshot.data.slice(offset..end),
            done: end == total,
        });
        if end == total {
            return Ok(chunks);
        }
        offset = end;
    }
}

/// Reassembles the chunks of one snapshot transfer from one peer.
#[derive(Debug, Default)]
pub struct SnapshotAssembler {
    pending: Option<PendingSnapshot>,
}

#[derive(Debug)]
struct PendingSnapshot {
    /// The first chunk without its data: every later chunk must match it except in offset/data/done.
    first: SnapshotChunk,
    data: BytesMut,
}

impl SnapshotAssembler {
    pub fn new() -> SnapshotAssembler {
        SnapshotAssembler::default()
    }

    /// Bytes received so far of the snapshot being assembled.
    pub fn received_bytes(&self) -> u64 {
        self.pending.as_ref().map_or(0, |p| p.data.len() as u64)
    }

    /// Takes the next chunk (already validated by the decoder). Returns the whole message when the
    /// last chunk arrives. A chunk that does not continue the current transfer discards it and
    /// returns an error; the leader will send the snapshot again from offset 0.
    pub fn accept(&mut self, chunk: SnapshotChunk) -> Result<Option<Message>, WireError> {
        if chunk.offset == 0 {
            let mut first = chunk.clone();
            first.data = bytes::Bytes::new();
            self.pending = Some(PendingSnapshot { first, data: BytesMut::new() });
        }
        let Some(pending) = self.pending.as_mut() else {
            return Err(WireError::SnapshotChunkOutOfOrder { expected_offset: 0, offset: chunk.offset });
        };
        let received = pending.data.len() as u64;
        let same_transfer = pending.first.from == chunk.from
            && pending.first.term == chunk.term
            && pending.first.total_bytes == chunk.total_bytes
            && pending.first.meta == chunk.meta;
        if chunk.offset != received || !same_transfer || received + chunk.data.len() as u64 > chunk.total_bytes {
            self.pending = None;
            let expected_offset = if same_transfer { received } else { 0 };
            return Err(WireError::SnapshotChunkOutOfOrder { expected_offset, offset: chunk.offset });
        }
        pending.data.extend_from_slice(&chunk.data);
        if !chunk.done {
            return Ok(None);
        }
        let Some(pending) = self.pending.take() else {
            return Ok(None);
        };
        debug_assert_eq!(pending.data.len() as u64, pending.first.total_bytes);
        let first = pending.first;
        let snapshot = Snapshot { meta: first.meta, data: pending.data.freeze() };
        Ok(Some(Message {
            from: first.from,
            to: chunk.to,
            term: first.term,
            body: MessageBody::InstallSnapshot { snapshot },
        }))
    }
}

//! Snapshot transfer: streaming a snapshot's image from the leader's file to a follower's file,
//! a chunk at a time, so that neither side ever holds the image in memory.
//!
//! Sending (leader): the core asks for `InstallSnapshot { meta }`; a [`Send`] reads the image of
//! that snapshot's file one chunk at a time (a storage job) and offers each chunk to the transport,
//! which takes it when the follower's connection has room (`take_chunk`). At most one chunk is
//! read ahead and one waits to be taken per follower: memory per transfer is two chunks.
//!
//! Receiving (follower): chunks must arrive in order from offset 0 (a new offset 0 restarts the
//! transfer); each is appended to a file by a storage job; the last one makes that job verify the
//! file (CRC), install it atomically, and build the state machine from it before the core hears
//! of the snapshot. A snapshot that fails verification is refused and reported to the leader.
//!
//! Invariants: one transfer per follower on a leader, one incoming transfer at a time on a
//! follower; offsets only grow; a chunk is offered once.

use std::collections::BTreeMap;

use crate::raft::{NodeId, SnapshotMeta, Term};
use crate::wire::SnapshotChunk;

/// Bytes of image per chunk (1 MiB): large enough for throughput, small next to a frame.
pub const SNAPSHOT_CHUNK_BYTES: usize = crate::wire::SNAPSHOT_CHUNK_BYTES;

/// A read the storage should do for a send: image bytes `[offset, offset + max_bytes)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRead {
    pub to: NodeId,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub max_bytes: usize,
}

#[derive(Debug)]
struct Send {
    term: Term,
    meta: SnapshotMeta,
    /// Offset of the next chunk to read.
    read_offset: u64,
    /// The image size, once the first read told it.
    total: Option<u64>,
    read_in_flight: bool,
    ready: Option<SnapshotChunk>,
}

#[derive(Debug)]
struct Receive {
    from: NodeId,
    term: Term,
    meta: SnapshotMeta,
    next_offset: u64,
    total: u64,
}

/// What a received chunk means for the storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Append it (a first chunk starts a new file, dropping any unfinished one).
    Append { first: bool, last: bool },
    /// A duplicate of a chunk already appended: nothing to do.
    Duplicate,
}

/// Every snapshot transfer of one node. See the module doc.
#[derive(Debug)]
pub struct Transfers {
    sends: BTreeMap<NodeId, Send>,
    receive: Option<Receive>,
    chunk_bytes: usize,
}

impl Default for Transfers {
    fn default() -> Self {
        Transfers::with_chunk_bytes(SNAPSHOT_CHUNK_BYTES)
    }
}

impl Transfers {
    /// Transfers that send images `chunk_bytes` at a time (at least 1, at most
    /// [`SNAPSHOT_CHUNK_BYTES`]).
    pub fn with_chunk_bytes(chunk_bytes: usize) -> Transfers {
        Transfers { sends: BTreeMap::new(), receive: None, chunk_bytes: chunk_bytes.clamp(1, SNAPSHOT_CHUNK_BYTES) }
    }

    // ----- sending ---------------------------------------------------------------------------

    /// The core wants `to` to get the snapshot `meta`. A transfer of the same snapshot already
    /// running goes on; anything else starts over.
    pub fn start_send(&mut self, to: NodeId, term: Term, meta: SnapshotMeta) {
        if self.sends.get(&to).is_some_and(|s| s.meta == meta && s.term == term) {
            return;
        }
        let send = Send { term, meta, read_offset: 0, total: None, read_in_flight: false, ready: None };
        self.sends.insert(to, send);
    }

    /// Reads to start: one per transfer that has nothing read ahead.
    pub fn reads_due(&mut self) -> Vec<ChunkRead> {
        let mut due = Vec::new();
        for (&to, send) in &mut self.sends {
            let finished = send.total.is_some_and(|total| send.read_offset >= total && send.read_offset > 0);
            if send.read_in_flight || send.ready.is_some() || finished {
                continue;
            }
            send.read_in_flight = true;
            due.push(ChunkRead { to, meta: send.meta.clone(), offset: send.read_offset, max_bytes: self.chunk_bytes });
        }
        due
    }

    /// A read finished: `data` are the image bytes at `offset` of an image of `total` bytes.
    /// Stale reads (another snapshot, a restarted transfer) are ignored.
    pub fn chunk_read(&mut self, from_node: NodeId, read: ChunkRead, total: u64, data: bytes::Bytes) {
        let Some(send) = self.sends.get_mut(&read.to) else { return };
        if send.meta != read.meta || send.read_offset != read.offset || !send.read_in_flight {
            return;
        }
        send.read_in_flight = false;
        send.total = Some(total);
        let end = read.offset + data.len() as u64;
        debug_assert!(end <= total, "read past the image end");
        send.read_offset = end;
        send.ready = Some(SnapshotChunk {
            from: from_node,
            to: read.to,
            term: send.term,
            meta: send.meta.clone(),
            offset: read.offset,
            total_bytes: total,
            data,
            done: end >= total,
        });
    }

    /// Followers with a chunk ready to go.
    pub fn chunks_ready(&self) -> Vec<NodeId> {
        self.sends.iter().filter(|(_, s)| s.ready.is_some()).map(|(&to, _)| to).collect()
    }

    /// The transport has room for `to`: the next chunk. The last chunk ends the transfer.
    pub fn take_chunk(&mut self, to: NodeId) -> Option<SnapshotChunk> {
        let chunk = self.sends.get_mut(&to)?.ready.take()?;
        if chunk.done {
            self.sends.remove(&to);
        }
        Some(chunk)
    }

    /// The transfer to `to` failed (connection lost, file gone): forget it.
    pub fn abort_send(&mut self, to: NodeId) -> bool {
        self.sends.remove(&to).is_some()
    }

    pub fn is_sending(&self, to: NodeId) -> bool {
        self.sends.contains_key(&to)
    }

    // ----- receiving -------------------------------------------------------------------------

    /// A chunk arrived from its sender. Refuses chunks out of order or that contradict the
    /// transfer they belong to (the connection is then closed and the leader starts over).
    pub fn chunk_arrived(&mut self, chunk: &SnapshotChunk, image_bytes_max: u64) -> Result<Received, String> {
        if chunk.total_bytes > image_bytes_max {
            return Err(format!(
                "a snapshot image of {} bytes is above the limit {image_bytes_max}",
                chunk.total_bytes
            ));
        }
        let end = chunk.offset + chunk.data.len() as u64;
        if end > chunk.total_bytes || chunk.done != (end == chunk.total_bytes) {
            return Err(format!("chunk {}..{end} does not fit an image of {} bytes", chunk.offset, chunk.total_bytes));
        }
        if chunk.offset == 0 {
            let (from, term, meta) = (chunk.from, chunk.term, chunk.meta.clone());
            self.receive = Some(Receive { from, term, meta, next_offset: end, total: chunk.total_bytes });
            return Ok(Received::Append { first: true, last: chunk.done });
        }
        let Some(rx) = self.receive.as_mut() else {
            return Err(format!("snapshot chunk at offset {} with no transfer started", chunk.offset));
        };
        let same = rx.from == chunk.from && rx.meta == chunk.meta && rx.total == chunk.total_bytes;
        if !same {
            return Err("snapshot chunk of another transfer".to_string());
        }
        if end <= rx.next_offset {
            return Ok(Received::Duplicate);
        }
        if chunk.offset != rx.next_offset {
            return Err(format!("snapshot chunk at offset {}, expected {}", chunk.offset, rx.next_offset));
        }
        rx.next_offset = end;
        rx.term = rx.term.max(chunk.term);
        Ok(Received::Append { first: false, last: chunk.done })
    }

    /// The storage finished (or refused) the incoming transfer.
    pub fn receive_finished(&mut self) {
        self.receive = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta { index, term: 2, conf: Default::default() }
    }

    fn chunk(offset: u64, data: &'static [u8], total: u64) -> SnapshotChunk {
        let done = offset + data.len() as u64 == total;
        SnapshotChunk {
            from: 1,
            to: 2,
            term: 3,
            meta: meta(9),
            offset,
            total_bytes: total,
            data: Bytes::from_static(data),
            done,
        }
    }

    #[test]
    fn a_send_reads_one_chunk_ahead_and_ends_with_the_last() {
        let mut t = Transfers::default();
        t.start_send(2, 3, meta(9));
        let read = t.reads_due().pop().expect("a first read");
        assert_eq!((read.to, read.offset), (2, 0));
        assert!(t.reads_due().is_empty(), "one read in flight at a time");
        t.chunk_read(1, read, 5, Bytes::from_static(b"abc"));
        assert!(t.reads_due().is_empty(), "a chunk waits to be taken");
        assert_eq!(t.chunks_ready(), vec![2]);
        let first = t.take_chunk(2).expect("first chunk");
        assert_eq!((first.offset, first.done, first.total_bytes), (0, false, 5));
        let read = t.reads_due().pop().expect("the next read");
        assert_eq!(read.offset, 3);
        t.chunk_read(1, read, 5, Bytes::from_static(b"de"));
        let last = t.take_chunk(2).expect("last chunk");
        assert!(last.done);
        assert!(!t.is_sending(2), "done");
    }

    #[test]
    fn a_new_snapshot_restarts_the_send_and_stale_reads_are_dropped() {
        let mut t = Transfers::default();
        t.start_send(2, 3, meta(9));
        let old = t.reads_due().pop().expect("read");
        t.start_send(2, 3, meta(9)); // the same snapshot again: keep going
        assert!(t.reads_due().is_empty());
        t.start_send(2, 3, meta(12)); // a newer one: start over
        let new = t.reads_due().pop().expect("read of the new snapshot");
        t.chunk_read(1, old, 5, Bytes::from_static(b"old"));
        assert!(t.chunks_ready().is_empty(), "a read of the old snapshot is stale");
        t.chunk_read(1, new, 3, Bytes::from_static(b"new"));
        assert_eq!(t.take_chunk(2).map(|c| c.meta.index), Some(12));
    }

    #[test]
    fn chunks_must_arrive_in_order() {
        let mut t = Transfers::default();
        assert!(t.chunk_arrived(&chunk(3, b"de", 5), 100).is_err(), "no transfer started");
        assert_eq!(t.chunk_arrived(&chunk(0, b"abc", 5), 100), Ok(Received::Append { first: true, last: false }));
        assert_eq!(t.chunk_arrived(&chunk(0, b"abc", 5), 100), Ok(Received::Append { first: true, last: false }));
        assert_eq!(t.chunk_arrived(&chunk(3, b"de", 5), 100), Ok(Received::Append { first: false, last: true }));
        assert_eq!(t.chunk_arrived(&chunk(3, b"de", 5), 100), Ok(Received::Duplicate));
        assert!(t.chunk_arrived(&chunk(0, b"abc", 500), 100).is_err(), "above the size limit");
        assert!(t.chunk_arrived(&chunk(0, b"ab", 5), 100).is_ok());
        assert!(t.chunk_arrived(&chunk(3, b"de", 5), 100).is_err(), "a gap");
    }
}

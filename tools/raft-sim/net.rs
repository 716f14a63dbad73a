//! The simulated network: what is in flight between nodes and clients, and the faults it suffers.
//!
//! Peer messages are datagrams here, harsher than `raftd`'s TCP links: they are dropped,
//! duplicated and reordered at will (the core must not care). Snapshot chunks ride an ordered
//! stream per (leader, follower): a chunk is never duplicated or reordered, and a lost one is a
//! broken connection that the leader hears about (`SnapshotAborted`), as a TCP reset. Client
//! traffic is per connection, also a stream: a reply goes only to the connection its request came
//! on, and a lost message is a broken connection.
//!
//! Invariants: delivery order is (due step, send order), so a seed replays exactly; chunks of one
//! stream are due in the order they were sent; the queue never holds more than
//! [`NETWORK_QUEUE_MAX`] items (beyond it new datagrams are dropped, streams break).

use std::collections::{BTreeMap, BTreeSet};

use mini_raft::raft::rng::Rng;
use mini_raft::raft::{Message, NodeId};
use mini_raft::wire::{ClientRequest, FrameBody, SnapshotChunk};

/// The network never holds more than this many items.
pub const NETWORK_QUEUE_MAX: usize = 20_000;

/// A client connection: the client's index and a serial that is never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnId {
    pub client: usize,
    pub serial: u64,
}

#[derive(Debug)]
pub enum Payload {
    Peer(Message),
    Chunk(SnapshotChunk),
    /// The follower dropped the snapshot stream (it refused the snapshot, or a chunk was lost):
    /// the leader's transport sees the connection close.
    SnapshotAborted {
        leader: NodeId,
        follower: NodeId,
    },
    Request {
        conn: ConnId,
        node: NodeId,
        request_id: u64,
        request: ClientRequest,
    },
    Reply {
        conn: ConnId,
        request_id: u64,
        body: FrameBody,
    },
    /// The node end of a client connection closed (the node died or restarted).
    Closed {
        conn: ConnId,
    },
}

struct InFlight {
    due: u64,
    seq: u64,
    payload: Payload,
}

/// Fault intensities of the network (per seed; healing turns them down).
#[derive(Clone, Debug)]
pub struct NetFaults {
    pub drop_per_mille: u64,
    pub duplicate_per_mille: u64,
    pub delay_ticks_max: u64,
    /// Chance that a snapshot chunk arrives with one byte flipped (a NIC or memory error that
    /// the follower's verification must catch).
    pub chunk_corrupt_per_mille: u64,
    /// Client messages whose connection breaks (the client reconnects and resends).
    pub client_drop_per_mille: u64,
}

pub struct Net {
    pub faults: NetFaults,
    queue: Vec<InFlight>,
    seq: u64,
    /// Node links cut, one way: (from, to).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// When the last chunk of each (leader, follower) stream is due.
    stream_tail: BTreeMap<(NodeId, NodeId), u64>,
    pub chunks_corrupted: u64,
}

impl Net {
    pub fn new(faults: NetFaults) -> Net {
        Net {
            faults,
            queue: Vec::new(),
            seq: 0,
            blocked: BTreeSet::new(),
            stream_tail: BTreeMap::new(),
            chunks_corrupted: 0,
        }
    }

    fn delay(&self, rng: &mut Rng) -> u64 {
        let max = self.faults.delay_ticks_max;
        if rng.chance(1, 20) {
            rng.range(0, 4 * max + 1)
        } else {
            rng.range(0, max + 1)
        }
    }

    fn push(&mut self, due: u64, payload: Payload) {
        self.seq += 1;
        self.queue.push(InFlight { due, seq: self.seq, payload });
    }

    /// A peer message: dropped, duplicated and delayed as the faults say.
    pub fn send_peer(&mut self, rng: &mut Rng, now: u64, message: Message) {
        if self.queue.len() >= NETWORK_QUEUE_MAX || rng.chance(self.faults.drop_per_mille, 1000) {
            return;
        }
        if rng.chance(self.faults.duplicate_per_mille, 1000) {
            let due = now + self.delay(rng);
            self.push(due, Payload::Peer(message.clone()));
        }
        let due = now + self.delay(rng);
        self.push(due, Payload::Peer(message));
    }

    /// A snapshot chunk on its ordered stream. A lost chunk breaks the stream: the leader hears
    /// of it. Returns false if the chunk was lost.
    pub fn send_chunk(&mut self, rng: &mut Rng, now: u64, mut chunk: SnapshotChunk) -> bool {
        let (leader, follower) = (chunk.from, chunk.to);
        let lost = self.queue.len() >= NETWORK_QUEUE_MAX
            || self.blocked.contains(&(leader, follower))
            || rng.chance(self.faults.drop_per_mille / 4, 1000);
        if lost {
            let due = now + self.delay(rng);
            self.push(due, Payload::SnapshotAborted { leader, follower });
            return false;
        }
        if !chunk.data.is_empty() && rng.chance(self.faults.chunk_corrupt_per_mille, 1000) {
            let mut data = chunk.data.to_vec();
            let at = rng.range(0, data.len() as u64) as usize;
            data[at] ^= 1 << rng.range(0, 8);
            chunk.data = bytes::Bytes::from(data);
            self.chunks_corrupted += 1;
        }
        let tail = self.stream_tail.get(&(leader, follower)).copied().unwrap_or(0);
        let due = (now + self.delay(rng)).max(tail);
        self.stream_tail.insert((leader, follower), due);
        self.push(due, Payload::Chunk(chunk));
        true
    }

    /// A stream end closed by the follower; the leader hears of it after a delay.
    pub fn abort_stream(&mut self, rng: &mut Rng, now: u64, leader: NodeId, follower: NodeId) {
        let due = now + self.delay(rng);
        self.push(due, Payload::SnapshotAborted { leader, follower });
    }

    /// A client request or reply on its connection, a TCP stream: a message is never lost on
    /// its own; instead the connection breaks (the message is lost with it and the client hears
    /// of the close).
    pub fn send_client(&mut self, rng: &mut Rng, now: u64, payload: Payload) {
        let conn = match &payload {
            Payload::Request { conn, .. } | Payload::Reply { conn, .. } | Payload::Closed { conn } => *conn,
            _ => return,
        };
        let due = now + rng.range(0, self.faults.delay_ticks_max.min(4) + 1);
        if self.queue.len() >= NETWORK_QUEUE_MAX || rng.chance(self.faults.client_drop_per_mille, 1000) {
            self.push(due, Payload::Closed { conn });
            return;
        }
        self.push(due, payload);
    }

    /// Tells the client that its connection to `node` closed.
    pub fn close_client(&mut self, rng: &mut Rng, now: u64, conn: ConnId) {
        let due = now + rng.range(0, 3);
        self.push(due, Payload::Closed { conn });
    }

    /// Everything due by `now`, in (due, send order). Items for a node that is paused until
    /// `paused_until(node)` are kept until it wakes (its socket buffers hold them).
    pub fn take_due(&mut self, now: u64, paused_until: impl Fn(NodeId) -> u64) -> Vec<Payload> {
        let (mut due, later): (Vec<InFlight>, Vec<InFlight>) =
            std::mem::take(&mut self.queue).into_iter().partition(|m| m.due <= now);
        self.queue = later;
        due.sort_by_key(|m| (m.due, m.seq));
        let mut out = Vec::with_capacity(due.len());
        for item in due {
            let target = match &item.payload {
                Payload::Peer(m) => Some(m.to),
                Payload::Chunk(c) => Some(c.to),
                Payload::SnapshotAborted { leader, .. } => Some(*leader),
                Payload::Request { node, .. } => Some(*node),
                Payload::Reply { .. } | Payload::Closed { .. } => None,
            };
            let wake = target.map_or(0, &paused_until);
            if now < wake {
                self.queue.push(InFlight { due: wake, ..item });
                continue;
            }
            out.push(item.payload);
        }
        out
    }

    /// Heals every partition and turns the faults down to a sane network.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.faults.drop_per_mille = 0;
        self.faults.duplicate_per_mille = 0;
        self.faults.client_drop_per_mille = 0;
        self.faults.chunk_corrupt_per_mille = 0;
        self.faults.delay_ticks_max = self.faults.delay_ticks_max.min(3);
    }
}

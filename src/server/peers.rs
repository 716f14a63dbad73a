//! Peer links: one outbound connection per peer that this node dials and sends its messages on,
//! redialed with exponential backoff and jitter when it drops, and the encoding of outgoing
//! messages into frames (snapshots as a stream of chunks).
//!
//! Each node dials every other member and sends on the connection it dialed; it accepts messages
//! on either connection of a pair (`protocol.md` §3.1), so a link is usable as soon as either side
//! has connected.
//!
//! Invariants: at most one outbound connection per peer at a time; a message to a peer without a
//! ready link is dropped (Raft retransmits), and a dropped snapshot is reported so that the core
//! probes again instead of waiting for an acknowledgement that cannot come.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::conn::{ConnKind, Traffic};
use super::node_metrics::NodeMetrics;
use super::reactor::{Reactor, PEER_QUEUE_BYTES_MAX};
use crate::raft::rng::Rng;
use crate::raft::{Message, MessageBody, NodeId};
use crate::wire::{Frame, FrameBody, Hello, HelloOk, SnapshotChunk, PROTOCOL_VERSION};

const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Snapshot bytes queued on one link at most (a few chunks): the rest waits in the replica.
const SNAPSHOT_QUEUE_BYTES_MAX: usize = 4 << 20;
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A heartbeat unanswered for this long is presumed lost: the next one is timed instead.
const HEARTBEAT_PROBE_STALE: Duration = Duration::from_secs(1);

struct PeerLink {
    /// The connection this node dialed, while it is open.
    token: Option<usize>,
    /// The connection the peer dialed to us, once its `Hello` was accepted: messages go out on it
    /// while our own link is not ready (a restarted peer hears from us at once).
    inbound: Option<usize>,
    /// Our own link completed its handshake.
    ready: bool,
    backoff: Duration,
    next_attempt: Instant,
    /// Dialed at least once (later dials count as reconnects).
    dialed: bool,
    /// The heartbeat being timed: its `read_seq` and when it was queued. One at a time; the
    /// first response carrying that `read_seq` ends it (a later heartbeat with the same
    /// `read_seq` answered first would make the sample longer, never shorter).
    heartbeat_probe: Option<(u64, Instant)>,
    /// When a message from the peer last arrived, on either connection.
    last_heard: Option<Instant>,
}

impl PeerLink {
    /// A link with no connection yet, to be dialed at once.
    fn new(now: Instant) -> PeerLink {
        PeerLink {
            token: None,
            inbound: None,
            ready: false,
            backoff: BACKOFF_MIN,
            next_attempt: now,
            dialed: false,
            heartbeat_probe: None,
            last_heard: None,
        }
    }
}

/// What became of one outgoing message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// No link or a full queue: dropped; Raft retransmits.
    Dropped,
}

/// The outbound links of one node. See the module doc.
pub struct PeerLinks {
    self_id: NodeId,
    cluster_id: u64,
    addresses: BTreeMap<NodeId, String>,
    links: BTreeMap<NodeId, PeerLink>,
    rng: Rng,
    metrics: Option<Arc<NodeMetrics>>,
}

impl PeerLinks {
    /// Links to every member of `addresses` but this node, all due for a dial now.
    pub fn new(self_id: NodeId, cluster_id: u64, addresses: BTreeMap<NodeId, String>, seed: u64) -> PeerLinks {
        let now = Instant::now();
        let links = addresses
            .keys()
            .filter(|&&id| id != self_id)
            .map(|&id| {
                let link = PeerLink::new(now);
                (id, link)
            })
            .collect();
        PeerLinks { self_id, cluster_id, addresses, links, rng: Rng::new(seed), metrics: None }
    }

    /// Counts bytes, redials and heartbeat round trips per peer in `metrics`.
    pub fn set_metrics(&mut self, metrics: Arc<NodeMetrics>) {
        self.metrics = Some(metrics);
    }

    fn traffic(&self, peer: NodeId) -> Option<Traffic> {
        let m = self.metrics.as_ref()?.peer(peer)?;
        Some(Traffic { sent: Arc::clone(&m.sent_bytes), received: Arc::clone(&m.received_bytes) })
    }

    /// A message from `peer` arrived: note when, and end a heartbeat round trip it answers.
    pub fn heard_from(&mut self, peer: NodeId, message: &MessageBody) {
        let Some(link) = self.links.get_mut(&peer) else { return };
        let now = Instant::now();
        link.last_heard = Some(now);
        let MessageBody::HeartbeatResponse { read_seq } = message else { return };
        let Some((probe_seq, sent_at)) = link.heartbeat_probe else { return };
        if probe_seq != *read_seq {
            return;
        }
        link.heartbeat_probe = None;
        if let Some(m) = self.metrics.as_ref().and_then(|m| m.peer(peer)) {
            m.heartbeat_rtt.observe_duration(now.saturating_duration_since(sent_at));
        }
    }

    /// Peers heard from within `window` of `now`.
    pub fn heard_within(&self, now: Instant, window: Duration) -> usize {
        let recent = |l: &&PeerLink| l.last_heard.is_some_and(|at| now.saturating_duration_since(at) <= window);
        self.links.values().filter(recent).count()
    }

    /// How long ago `peer` was last heard from (`None`: never since start-up).
    pub fn last_heard(&self, peer: NodeId, now: Instant) -> Option<Duration> {
        self.links.get(&peer).and_then(|l| l.last_heard).map(|at| now.saturating_duration_since(at))
    }

    pub fn is_peer(&self, id: NodeId) -> bool {
        self.links.contains_key(&id)
    }

    /// The configuration in force names these members (id, address): links to new ones, due for
    /// a dial now, and addresses updated. An empty address keeps the known one (a member that
    /// dialed us before we knew where it listens: we answer on its connection until then).
    /// Links of departed members stay: a removed node is told nothing more, and a link costs
    /// one idle connection at most (bounded by the members a cluster ever had).
    pub fn add_members(&mut self, members: &[(NodeId, String)]) {
        let now = Instant::now();
        for (id, address) in members.iter().filter(|(id, _)| *id != self.self_id) {
            if !address.is_empty() && self.addresses.get(id) != Some(address) {
                info!("peer {id} is at {address}");
                self.addresses.insert(*id, address.clone());
            }
            self.links.entry(*id).or_insert_with(|| PeerLink::new(now));
        }
    }

    /// The address members and clients dial to reach `id`.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.addresses.get(&id).map(String::as_str)
    }

    /// Dials every peer that has no connection and whose backoff expired.
    pub fn dial_due(&mut self, reactor: &mut Reactor, now: Instant) {
        let addresses = &self.addresses;
        let due: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(id, l)| l.token.is_none() && l.next_attempt <= now && addresses.contains_key(id))
            .map(|(&id, _)| id)
            .collect();
        for peer in due {
            self.dial(reactor, peer);
        }
    }

    fn resolve(&self, peer: NodeId) -> Option<SocketAddr> {
        self.addresses.get(&peer).and_then(|a| a.to_socket_addrs().ok()).and_then(|mut addrs| addrs.next())
    }

    fn dial(&mut self, reactor: &mut Reactor, peer: NodeId) {
        let Some(addr) = self.resolve(peer) else {
            warn!("peer {peer}: address {:?} does not resolve", self.addresses.get(&peer));
            if let Some(link) = self.links.get_mut(&peer) {
                link.next_attempt = Instant::now() + BACKOFF_MAX;
            }
            return;
        };
        if let Some(link) = self.links.get_mut(&peer) {
            if link.dialed {
                if let Some(m) = self.metrics.as_ref().and_then(|m| m.peer(peer)) {
                    m.reconnects.inc();
                }
            }
            link.dialed = true;
        }
        let token = match reactor.connect(addr, ConnKind::OutboundPeer { peer, ready: false }, PEER_QUEUE_BYTES_MAX) {
            Ok(token) => token,
            Err(e) => {
                debug!("dial peer {peer} at {addr}: {e}");
                if let Some(link) = self.links.get_mut(&peer) {
                    link.next_attempt = Instant::now() + link.backoff;
                    link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
                }
                return;
            }
        };
        let hello = Hello {
            role: crate::wire::Role::Peer,
            cluster_id: self.cluster_id,
            node_id: self.self_id,
            protocol_version: PROTOCOL_VERSION,
        };
        if let Some(traffic) = self.traffic(peer) {
            reactor.set_traffic(token, traffic);
        }
        reactor.send(token, &Frame::new(0, FrameBody::Hello(hello)));
        if let Some(link) = self.links.get_mut(&peer) {
            link.token = Some(token);
        }
    }

    /// A peer dialed us and said `Hello` on `token`. Its process may have just restarted: reset
    /// the backoff toward it and dial at once if our own link is down.
    pub fn on_inbound_hello(&mut self, reactor: &mut Reactor, peer: NodeId, token: usize) {
        if let Some(traffic) = self.traffic(peer) {
            reactor.set_traffic(token, traffic);
        }
        let Some(link) = self.links.get_mut(&peer) else { return };
        link.inbound = Some(token);
        link.backoff = BACKOFF_MIN;
        if link.token.is_none() {
            self.dial(reactor, peer);
        }
    }

    /// A connection closed. If it was our link to a peer, schedule a redial with backoff and
    /// jitter, and return the peer: anything queued on it (a snapshot included) is lost.
    pub fn on_closed(&mut self, token: usize, kind: ConnKind) -> Option<NodeId> {
        if let ConnKind::InboundPeer(peer) = kind {
            let link = self.links.get_mut(&peer).filter(|l| l.inbound == Some(token))?;
            link.inbound = None;
            // A snapshot may have been streaming on it while our own link was down.
            return (!link.ready).then_some(peer);
        }
        let ConnKind::OutboundPeer { peer, .. } = kind else { return None };
        let link = self.links.get_mut(&peer).filter(|l| l.token == Some(token))?;
        link.token = None;
        link.ready = false;
        let jitter = self.rng.range(0, link.backoff.as_millis() as u64 / 2 + 1);
        link.next_attempt = Instant::now() + link.backoff + Duration::from_millis(jitter);
        link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
        Some(peer)
    }

    /// The peer answered our `Hello`. Returns false if it is not who we dialed (close it).
    pub fn on_hello_ok(&mut self, reactor: &mut Reactor, token: usize, peer: NodeId, ok: &HelloOk) -> bool {
        if ok.node_id != peer || ok.cluster_id != self.cluster_id {
            warn!(
                "peer {peer} at {:?} answered as node {} of cluster {}",
                self.addresses.get(&peer),
                ok.node_id,
                ok.cluster_id
            );
            return false;
        }
        reactor.set_kind(token, ConnKind::OutboundPeer { peer, ready: true });
        if let Some(link) = self.links.get_mut(&peer) {
            link.backoff = BACKOFF_MIN;
            link.ready = true;
        }
        info!("connected to peer {peer}");
        true
    }

    /// The connection messages to `to` go out on: our own link (frames queued during its
    /// handshake follow the Hello); without one, the link the peer dialed to us.
    fn token_for(&self, to: NodeId) -> Option<usize> {
        self.links.get(&to).and_then(|l| l.token.or(l.inbound))
    }

    /// Queues `message` on its peer's link (not a snapshot: those stream as chunks).
    pub fn send(&mut self, reactor: &mut Reactor, message: &Message) -> Sent {
        debug_assert!(!matches!(message.body, MessageBody::InstallSnapshot { .. }), "snapshots stream as chunks");
        let Some(token) = self.token_for(message.to) else { return Sent::Dropped };
        if reactor.send(token, &Frame::new(0, FrameBody::Peer(message.clone()))) {
            if let MessageBody::Heartbeat { read_seq, .. } = message.body {
                self.time_heartbeat(message.to, read_seq);
            }
            Sent::Queued
        } else {
            Sent::Dropped // queue full (a slow or dead peer); Raft retransmits
        }
    }

    /// Starts timing a heartbeat to `to` unless one is being timed (and not presumed lost).
    fn time_heartbeat(&mut self, to: NodeId, read_seq: u64) {
        if self.metrics.is_none() {
            return;
        }
        let Some(link) = self.links.get_mut(&to) else { return };
        let now = Instant::now();
        let busy =
            link.heartbeat_probe.is_some_and(|(_, at)| now.saturating_duration_since(at) < HEARTBEAT_PROBE_STALE);
        if !busy {
            link.heartbeat_probe = Some((read_seq, now));
        }
    }

    /// True if the link to `to` has room for another snapshot chunk (a transfer keeps at most
    /// [`SNAPSHOT_QUEUE_BYTES_MAX`] queued, so appends and heartbeats are never stuck behind it).
    pub fn has_snapshot_room(&self, reactor: &Reactor, to: NodeId) -> bool {
        self.token_for(to).and_then(|t| reactor.queued_bytes(t)).is_some_and(|q| q < SNAPSHOT_QUEUE_BYTES_MAX)
    }

    /// Queues one snapshot chunk; false if there is no link or it cannot take it.
    pub fn send_chunk(&mut self, reactor: &mut Reactor, chunk: SnapshotChunk) -> bool {
        let Some(token) = self.token_for(chunk.to) else { return false };
        reactor.send_beyond_cap(token, &Frame::new(0, FrameBody::SnapshotChunk(chunk)))
    }

    /// Drops every connection with `peer`: a transfer from it is refused, so it starts over.
    pub fn close_links_of(&mut self, reactor: &mut Reactor, peer: NodeId) {
        let Some(link) = self.links.get(&peer) else { return };
        for token in [link.token, link.inbound].into_iter().flatten() {
            reactor.close(token);
        }
    }
}

//! The node: one mio reactor thread that runs the network and the consensus core, plus the
//! storage thread that makes ready batches durable.
//!
//! One loop iteration: poll (until the next tick at most); accept connections, read frames and
//! dispatch them (client requests to the core, peer messages to `step`), flush writes; collect
//! finished storage jobs; tick the core for the wall time that passed; start one ReadIndex round
//! for all the linearizable gets that arrived; hand the core's next ready batch to storage while
//! its immediate messages go out; reap idle connections and redial peers.
//!
//! Bounds: frames ≤ `MAX_FRAME_BYTES` (the decoder refuses more before buffering); per-connection
//! write queues (`CLIENT_QUEUE_BYTES_MAX`, `PEER_QUEUE_BYTES_MAX`); client requests in flight per
//! connection (`CLIENT_REQUESTS_IN_FLIGHT_MAX`) and per node (`WRITES_WAITING_MAX`,
//! `READS_WAITING_MAX`); connections (`CONNECTIONS_MAX`).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::config::NodeConfig;
use super::conn::{ConnKind, Connection};
use super::storage_thread::{IoDone, IoJob, StorageThread};
use crate::kv::{ApplyResult, KvStore};
use crate::raft::rng::Rng;
use crate::raft::{
    ConfState, Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId, ProposeError, Raft, RaftConfig, Ready,
    Restored, Role, Snapshot, SnapshotMeta,
};
use crate::storage::{SnapshotStore, Wal, WalOptions};
use crate::wire::{
    check_hello, snapshot_chunks, ClientReply, ClientRequest, ErrorCode, ErrorReply, Frame, FrameBody, Hello, HelloOk,
    NodeRole, PeerStatus, ReadConsistency, StatusReport, PROTOCOL_VERSION, SNAPSHOT_CHUNK_BYTES,
};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

pub const CONNECTIONS_MAX: usize = 4096;
/// Accepted connections that have not completed their `Hello` yet.
pub const HANDSHAKES_MAX: usize = 256;
/// Client connections; the rest of `CONNECTIONS_MAX` stays free for handshakes and peers, so
/// that clients can never lock a leader's followers out.
pub const CLIENT_CONNECTIONS_MAX: usize = CONNECTIONS_MAX - HANDSHAKES_MAX - 64;
pub const CLIENT_QUEUE_BYTES_MAX: usize = 8 << 20;
/// Room for a few snapshot chunks plus a window of appends.
pub const PEER_QUEUE_BYTES_MAX: usize = 64 << 20;
pub const CLIENT_REQUESTS_IN_FLIGHT_MAX: usize = 1024;
pub const WRITES_WAITING_MAX: usize = 65_536;
pub const READS_WAITING_MAX: usize = 65_536;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// An outbound peer connection with queued bytes and no write progress for this long is
/// presumed half-open and redialed.
const PEER_STALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often idle connections are reaped and missing peer connections redialed.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(50);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Serializing a snapshot on the event loop for longer than this is logged as a warning.
const SNAPSHOT_SERIALIZE_WARN: Duration = Duration::from_millis(20);
/// After a stall (a paused process), tick at most this many times at once.
const TICKS_CATCH_UP_MAX: u32 = 20;

#[derive(Clone, Copy, Debug)]
struct Waiter {
    token: usize,
    serial: u64,
    request_id: u64,
}

struct WriteWaiter {
    waiter: Waiter,
    term: u64,
}

struct ReadWaiter {
    waiter: Waiter,
    key: Bytes,
}

struct PeerLink {
    token: Option<usize>,
    backoff: Duration,
    next_attempt: Instant,
}

pub struct Node {
    cfg: NodeConfig,
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Connection>,
    next_serial: u64,
    peers: BTreeMap<NodeId, PeerLink>,
    raft: Raft,
    kv: KvStore,
    storage: StorageThread,
    /// The ready batch whose persistence is in flight (its entries already handed to storage).
    io_in_flight: Option<Ready>,
    compaction_in_flight: bool,
    /// The last hard state handed to storage, and a newer commit-only one not yet handed.
    hard_state_submitted: HardState,
    commit_deferred: Option<HardState>,
    snapshot_meta: SnapshotMeta,
    log_bytes: u64,
    writes_waiting: BTreeMap<Index, WriteWaiter>,
    /// Writes received in this loop iteration, proposed together at its end.
    proposals_batch: Vec<(Waiter, Bytes)>,
    reads_batch: Vec<ReadWaiter>,
    reads_awaiting_confirm: BTreeMap<u64, Vec<ReadWaiter>>,
    reads_awaiting_apply: Vec<(Index, Vec<ReadWaiter>)>,
    reads_waiting: usize,
    next_read_ctx: u64,
    next_tick: Instant,
    rng: Rng,
    was_leader: bool,
    /// Connections whose last read stopped at the fairness budget.
    read_again: Vec<usize>,
    /// The last accept failed (e.g. out of file descriptors): retry next iteration.
    accept_again: bool,
    next_maintenance: Instant,
}

/// Why a node could not start: each message names the flag, file or address at fault.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Node {
    /// Opens storage (with recovery), restores the state machine and binds the listener.
    pub fn start(cfg: NodeConfig) -> Result<Node, StartError> {
        cfg.validate().map_err(StartError)?;
        let data_dir = &cfg.data_dir;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StartError(format!("cannot create data directory {}: {e}", data_dir.display())))?;
        let wal_dir = data_dir.join("wal");
        let snap_dir = data_dir.join("snap");
        let (snapshots, removed) = SnapshotStore::open(&snap_dir)
            .map_err(|e| StartError(format!("cannot open snapshots in {}: {e}", snap_dir.display())))?;
        for path in removed {
            warn!("removed interrupted snapshot write {}", path.display());
        }
        let snapshot = snapshots
            .latest()
            .map_err(|e| StartError(format!("cannot load the latest snapshot in {}: {e}", snap_dir.display())))?;
        let wal_opts = WalOptions { segment_bytes: cfg.segment_bytes, ..WalOptions::default() };
        let (mut wal, report) = Wal::open(&wal_dir, wal_opts)
            .map_err(|e| StartError(format!("cannot open the log in {}: {e}", wal_dir.display())))?;
        if report.bytes_truncated > 0 {
            warn!("log recovery dropped a torn tail of {} bytes at {:?}", report.bytes_truncated, report.truncated_at);
        }
        info!("log recovered: {} entries in {} segments in {:?}", report.entries, report.segments, report.elapsed);
        if let Some(s) = &snapshot {
            if s.meta.index > wal.snapshot_floor().0 {
                // The snapshot file is durable but the log was not yet compacted under it: a
                // crash between the two steps of installing a leader's snapshot (or of our own
                // compaction). Finish it now, or the log could hold another leader's suffix after
                // the snapshot (paper Figure 13, steps 6-7: discard a log that does not match).
                info!("finishing an interrupted snapshot install at index {} (term {})", s.meta.index, s.meta.term);
                wal.compact(s.meta.index, s.meta.term).map_err(|e| {
                    StartError(format!("cannot compact the log in {} under the snapshot: {e}", wal_dir.display()))
                })?;
            }
        }
        let restored = restore_state(&wal, snapshot)?;
        let hard_state_submitted = restored.hard_state;
        let kv = match &restored.snapshot {
            Some(s) => KvStore::restore(&s.data).map_err(|e| {
                StartError(format!("snapshot at index {} in {} is unusable: {e}", s.meta.index, snap_dir.display()))
            })?,
            None => KvStore::new(),
        };
        let snapshot_meta = restored.snapshot.as_ref().map(|s| s.meta.clone()).unwrap_or_default();
        let seed = seed_from_clock(cfg.id);
        let mut raft_cfg = RaftConfig::new(cfg.id, cfg.peers.keys().copied().collect(), seed);
        raft_cfg.heartbeat_ticks = cfg.heartbeat_ticks;
        raft_cfg.election_ticks = cfg.election_ticks;
        let raft = Raft::new(raft_cfg, restored).map_err(|e| StartError(format!("inconsistent durable state: {e}")))?;

        let poll = Poll::new().map_err(|e| StartError(format!("cannot create the event loop: {e}")))?;
        let mut listener =
            TcpListener::bind(cfg.listen).map_err(|e| StartError(format!("cannot listen on {}: {e}", cfg.listen)))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| StartError(format!("cannot register the listener: {e}")))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| StartError(format!("cannot create waker: {e}")))?);
        let storage = StorageThread::spawn(wal, snapshots, cfg.segment_bytes, waker)
            .map_err(|e| StartError(format!("cannot start the storage thread: {e}")))?;
        let now = Instant::now();
        let peers = cfg
            .peers
            .keys()
            .filter(|&&id| id != cfg.id)
            .map(|&id| {
                let link = PeerLink { token: None, backoff: BACKOFF_MIN, next_attempt: now };
                (id, link)
            })
            .collect();
        info!("node {} listening on {} (cluster {}, peers {:?})", cfg.id, cfg.listen, cfg.cluster_id, cfg.peers);
        Ok(Node {
            next_tick: now + cfg.tick,
            cfg,
            poll,
            listener,
            conns: Slab::new(),
            next_serial: 1,
            peers,
            raft,
            kv,
            storage,
            io_in_flight: None,
            compaction_in_flight: false,
            hard_state_submitted,
            commit_deferred: None,
            snapshot_meta,
            log_bytes: 0,
            writes_waiting: BTreeMap::new(),
            proposals_batch: Vec::new(),
            reads_batch: Vec::new(),
            reads_awaiting_confirm: BTreeMap::new(),
            reads_awaiting_apply: Vec::new(),
            reads_waiting: 0,
            next_read_ctx: 1,
            rng: Rng::new(seed),
            was_leader: false,
            read_again: Vec::new(),
            accept_again: false,
            next_maintenance: now,
        })
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs the event loop until a fatal error (a storage failure or a broken invariant).
    pub fn run(mut self) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.read_again.is_empty() {
                self.next_tick.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(format!("event loop poll failed: {e}"));
                }
            }
            if std::mem::take(&mut self.accept_again) {
                self.accept_all();
            }
            for token in std::mem::take(&mut self.read_again) {
                self.read_from(token);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(index) => self.connection_event(index, event.is_readable(), event.is_writable()),
                }
            }
            self.collect_storage_results()?;
            self.run_ticks();
            self.propose_batch();
            self.start_read_round();
            self.drive_ready()?;
            if self.io_in_flight.is_some() {
                // Heartbeats and appends need no disk: keep them on time during a slow sync.
                for message in self.raft.take_messages() {
                    self.send_peer(message);
                }
            }
            self.maintain_connections();
            self.flush_all();
        }
    }

    // ----- connections ---------------------------------------------------------------------------

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, addr)) => {
                    let handshaking = self.conns.iter().filter(|(_, c)| c.kind == ConnKind::AwaitingHello).count();
                    if self.conns.len() >= CONNECTIONS_MAX || handshaking >= HANDSHAKES_MAX {
                        warn!("refusing connection from {addr}: {} open, {handshaking} in handshake", self.conns.len());
                        continue; // dropping the stream closes it
                    }
                    let _ = stream.set_nodelay(true);
                    debug!("accepted connection from {addr}");
                    self.add_connection(stream, ConnKind::AwaitingHello, CLIENT_QUEUE_BYTES_MAX);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have, and try again
                    // next iteration (edge-triggered: the backlog raises no new event by itself).
                    warn!("accept failed: {e}");
                    self.accept_again = true;
                    return;
                }
            }
        }
    }

    fn add_connection(&mut self, mut stream: TcpStream, kind: ConnKind, queue_max: usize) -> Option<usize> {
        let entry = self.conns.vacant_entry();
        let token = entry.key();
        if let Err(e) =
            self.poll.registry().register(&mut stream, Token(token), Interest::READABLE | Interest::WRITABLE)
        {
            warn!("cannot register connection: {e}");
            return None;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        entry.insert(Connection::new(stream, serial, kind, queue_max));
        Some(token)
    }

    fn connection_event(&mut self, token: usize, readable: bool, writable: bool) {
        if writable {
            self.on_writable(token);
        }
        if readable {
            self.read_from(token);
        }
    }

    fn on_writable(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.connecting {
            match (conn.stream.take_error(), conn.stream.peer_addr()) {
                (Ok(None), Ok(_)) => conn.connecting = false,
                (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
                (Ok(Some(e)), _) | (Err(e), _) | (_, Err(e)) => {
                    debug!("connect to peer failed: {e}");
                    self.close(token);
                    return;
                }
            }
        }
        self.flush(token);
    }

    fn read_from(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.close_after_flush || conn.half_closed || conn.read_paused || conn.connecting {
            return;
        }
        let outcome = conn.read();
        for raw in outcome.frames {
            let request_id = raw.request_id;
            match Frame::decode(raw) {
                Ok(frame) => self.on_frame(token, frame),
                Err(e) => {
                    self.refuse(token, request_id, ErrorReply::from_wire_error(&e));
                    return;
                }
            }
            if self.conns.get(token).is_none_or(|c| c.close_after_flush) {
                return;
            }
        }
        if let Some(e) = outcome.error {
            self.refuse(token, 0, ErrorReply::from_wire_error(&e));
            return;
        }
        if outcome.eof {
            let Some(conn) = self.conns.get_mut(token) else { return };
            if conn.kind == ConnKind::Client && (conn.requests_in_flight > 0 || conn.has_pending_writes()) {
                // A client may shut down its sending side and still wait for its replies.
                conn.half_closed = true;
            } else {
                self.close(token);
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.over_high_watermark() {
            conn.read_paused = true; // resumed by flush() once the client drains its replies
        } else if outcome.more {
            self.read_again.push(token);
        }
    }

    /// Sends an error frame, then closes the connection once it is written.
    fn refuse(&mut self, token: usize, request_id: u64, reply: ErrorReply) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        info!("refusing connection {token} ({:?}): {} {}", conn.kind, reply.code.to_u16(), reply.message);
        if let Ok(bytes) = Frame::new(request_id, FrameBody::Error(reply)).to_bytes() {
            conn.queue(bytes);
        }
        conn.close_after_flush = true;
        self.flush(token);
    }

    fn close(&mut self, token: usize) {
        if !self.conns.contains(token) {
            return;
        }
        let mut conn = self.conns.remove(token);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        match conn.kind {
            ConnKind::OutboundPeer { peer, .. } => {
                if let Some(link) = self.peers.get_mut(&peer) {
                    link.token = None;
                    let jitter = self.rng.range(0, link.backoff.as_millis() as u64 / 2 + 1);
                    link.next_attempt = Instant::now() + link.backoff + Duration::from_millis(jitter);
                    link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
                }
                // Anything queued (including a snapshot) is lost; the core re-sends.
                self.raft.report_snapshot_failed(peer);
            }
            ConnKind::InboundPeer(_) | ConnKind::AwaitingHello | ConnKind::Client => {}
        }
    }

    fn flush(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.connecting {
            return;
        }
        if let Err(e) = conn.flush() {
            debug!("connection {token} write failed: {e}");
            self.close(token);
            return;
        }
        let done = !conn.has_pending_writes()
            && (conn.close_after_flush || (conn.half_closed && conn.requests_in_flight == 0));
        if done {
            self.close(token);
            return;
        }
        if conn.read_paused && !conn.over_high_watermark() {
            conn.read_paused = false;
            self.read_again.push(token);
        }
    }

    fn flush_all(&mut self) {
        let dirty: Vec<usize> = self.conns.iter().filter(|(_, c)| c.has_pending_writes()).map(|(t, _)| t).collect();
        for token in dirty {
            self.flush(token);
        }
    }

    /// Reaps idle and half-open connections and dials peers we have no connection to.
    fn maintain_connections(&mut self) {
        let now = Instant::now();
        // Timeouts are seconds long and redials back off from 50 ms: a scan of every connection
        // on every loop iteration (thousands per second under load) would be wasted work.
        if now < self.next_maintenance {
            return;
        }
        self.next_maintenance = now + MAINTENANCE_INTERVAL;
        let mut stale = Vec::new();
        for (token, conn) in self.conns.iter() {
            let idle = now.saturating_duration_since(conn.last_read);
            let expired = match conn.kind {
                ConnKind::AwaitingHello => now.saturating_duration_since(conn.accepted_at) > HANDSHAKE_TIMEOUT,
                ConnKind::Client => idle > CLIENT_IDLE_TIMEOUT && conn.requests_in_flight == 0,
                ConnKind::InboundPeer(_) => idle > PEER_IDLE_TIMEOUT,
                ConnKind::OutboundPeer { ready, .. } => {
                    let stalled = conn.has_pending_writes()
                        && now.saturating_duration_since(conn.last_write_progress) > PEER_STALL_TIMEOUT;
                    let slow_connect = (conn.connecting || !ready) && idle > CONNECT_TIMEOUT;
                    stalled || slow_connect
                }
            };
            if expired {
                stale.push(token);
            }
        }
        for token in stale {
            debug!("closing idle or stalled connection {token}");
            self.close(token);
        }
        let due: Vec<NodeId> =
            self.peers.iter().filter(|(_, l)| l.token.is_none() && l.next_attempt <= now).map(|(&id, _)| id).collect();
        for peer in due {
            self.dial(peer);
        }
    }

    fn dial(&mut self, peer: NodeId) {
        let Some(addr) = self.cfg.peer_addr(peer) else {
            warn!("peer {peer}: address {:?} does not resolve", self.cfg.peers.get(&peer));
            if let Some(link) = self.peers.get_mut(&peer) {
                link.next_attempt = Instant::now() + BACKOFF_MAX;
            }
            return;
        };
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                debug!("dial peer {peer} at {addr}: {e}");
                if let Some(link) = self.peers.get_mut(&peer) {
                    link.next_attempt = Instant::now() + link.backoff;
                    link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
                }
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(token) =
            self.add_connection(stream, ConnKind::OutboundPeer { peer, ready: false }, PEER_QUEUE_BYTES_MAX)
        else {
            return;
        };
        let hello = Hello {
            role: crate::wire::Role::Peer,
            cluster_id: self.cfg.cluster_id,
            node_id: self.cfg.id,
            protocol_version: PROTOCOL_VERSION,
        };
        if let (Some(conn), Ok(bytes)) = (self.conns.get_mut(token), Frame::new(0, FrameBody::Hello(hello)).to_bytes())
        {
            conn.connecting = true;
            conn.queue(bytes);
        }
        if let Some(link) = self.peers.get_mut(&peer) {
            link.token = Some(token);
        }
    }

    // ----- frames ----------------------------------------------------------------------------------

    fn on_frame(&mut self, token: usize, frame: Frame) {
        let Some(kind) = self.conns.get(token).map(|c| c.kind) else { return };
        match (kind, frame.body) {
            (ConnKind::AwaitingHello, FrameBody::Hello(hello)) => self.on_hello(token, frame.request_id, hello),
            (ConnKind::AwaitingHello, _) => self.refuse(
                token,
                frame.request_id,
                ErrorReply::new(ErrorCode::HandshakeRequired, "the first frame on a connection must be Hello"),
            ),
            (ConnKind::Client, FrameBody::Request(request)) => self.on_client_request(token, frame.request_id, request),
            // Peer traffic is accepted on either connection of a pair (protocol.md §3.1).
            (ConnKind::InboundPeer(peer) | ConnKind::OutboundPeer { peer, ready: true }, FrameBody::Peer(message)) => {
                self.on_peer_message(token, peer, message)
            }
            (
                ConnKind::InboundPeer(peer) | ConnKind::OutboundPeer { peer, ready: true },
                FrameBody::SnapshotChunk(chunk),
            ) => {
                if chunk.from != peer || chunk.to != self.cfg.id {
                    let text =
                        format!("snapshot chunk from {} to {} on node {peer}'s connection", chunk.from, chunk.to);
                    return self.refuse(token, 0, ErrorReply::new(ErrorCode::UnexpectedMessage, text));
                }
                let assembled = match self.conns.get_mut(token) {
                    Some(conn) => conn.assembler.accept(chunk),
                    None => return,
                };
                match assembled {
                    Ok(Some(message)) => self.raft.step(message),
                    Ok(None) => {}
                    Err(e) => self.refuse(token, 0, ErrorReply::from_wire_error(&e)),
                }
            }
            (ConnKind::OutboundPeer { peer, ready: false }, FrameBody::HelloOk(ok)) => {
                self.on_hello_ok(token, peer, ok)
            }
            (ConnKind::OutboundPeer { peer, .. }, FrameBody::Error(e)) => {
                warn!("peer {peer} refused our connection: {} {}", e.code.to_u16(), e.message);
                self.close(token);
            }
            (_, body) => {
                let text = format!("{:?} frame not allowed on a {kind:?} connection", frame_name(&body));
                self.refuse(token, frame.request_id, ErrorReply::new(ErrorCode::UnexpectedMessage, text));
            }
        }
    }

    fn on_hello(&mut self, token: usize, request_id: u64, hello: Hello) {
        if let Err(reply) = check_hello(&hello, self.cfg.cluster_id) {
            return self.refuse(token, request_id, reply);
        }
        let kind = match hello.role {
            crate::wire::Role::Client => {
                let clients = self.conns.iter().filter(|(_, c)| c.kind == ConnKind::Client).count();
                if clients >= CLIENT_CONNECTIONS_MAX {
                    let text = format!("{clients} client connections open; try again later");
                    return self.refuse(token, request_id, ErrorReply::new(ErrorCode::Overloaded, text));
                }
                ConnKind::Client
            }
            crate::wire::Role::Peer => {
                if hello.node_id == self.cfg.id || !self.cfg.peers.contains_key(&hello.node_id) {
                    let text = format!("node {} is not a peer of node {}", hello.node_id, self.cfg.id);
                    return self.refuse(token, request_id, ErrorReply::new(ErrorCode::BadHello, text));
                }
                ConnKind::InboundPeer(hello.node_id)
            }
        };
        let ok = HelloOk { cluster_id: self.cfg.cluster_id, node_id: self.cfg.id, protocol_version: PROTOCOL_VERSION };
        if let Some(conn) = self.conns.get_mut(token) {
            conn.kind = kind;
        }
        self.send_frame(token, Frame::new(request_id, FrameBody::HelloOk(ok)));
    }

    fn on_hello_ok(&mut self, token: usize, peer: NodeId, ok: HelloOk) {
        if ok.node_id != peer || ok.cluster_id != self.cfg.cluster_id {
            warn!(
                "peer {peer} at {:?} answered as node {} of cluster {}",
                self.cfg.peers.get(&peer),
                ok.node_id,
                ok.cluster_id
            );
            self.close(token);
            return;
        }
        if let Some(conn) = self.conns.get_mut(token) {
            conn.kind = ConnKind::OutboundPeer { peer, ready: true };
        }
        if let Some(link) = self.peers.get_mut(&peer) {
            link.backoff = BACKOFF_MIN;
        }
        info!("connected to peer {peer}");
    }

    fn on_peer_message(&mut self, token: usize, peer: NodeId, message: Message) {
        if message.from != peer || message.to != self.cfg.id {
            let text = format!("message from {} to {} on node {peer}'s connection", message.from, message.to);
            return self.refuse(token, 0, ErrorReply::new(ErrorCode::UnexpectedMessage, text));
        }
        self.raft.step(message);
    }

    fn send_frame(&mut self, token: usize, frame: Frame) -> bool {
        let Some(conn) = self.conns.get_mut(token) else { return false };
        match frame.to_bytes() {
            Ok(bytes) => conn.queue(bytes),
            Err(e) => {
                error!("cannot encode a {} frame: {e}", frame_name(&frame.body));
                false
            }
        }
    }

    fn send_frame_beyond_cap(&mut self, token: usize, frame: Frame) -> bool {
        let Some(conn) = self.conns.get_mut(token) else { return false };
        match frame.to_bytes() {
            Ok(bytes) => conn.queue_beyond_cap(bytes),
            Err(e) => {
                error!("cannot encode a {} frame: {e}", frame_name(&frame.body));
                false
            }
        }
    }

    fn send_peer(&mut self, message: Message) {
        let to = message.to;
        let Some(token) = self.peers.get(&to).and_then(|l| l.token) else {
            // No connection yet: drop it, Raft retransmits. A snapshot must be re-offered.
            if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                self.raft.report_snapshot_failed(to);
            }
            return;
        };
        let frames = match &message.body {
            MessageBody::InstallSnapshot { snapshot } => {
                match snapshot_chunks(message.from, to, message.term, snapshot, SNAPSHOT_CHUNK_BYTES) {
                    Ok(chunks) => chunks.into_iter().map(|c| Frame::new(0, FrameBody::SnapshotChunk(c))).collect(),
                    Err(e) => {
                        error!("cannot send snapshot to {to}: {e}");
                        return;
                    }
                }
            }
            _ => vec![Frame::new(0, FrameBody::Peer(message.clone()))],
        };
        let is_snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
        for frame in frames {
            // A snapshot may exceed the queue cap on its own; it is still bounded, because a
            // follower in the snapshot state gets nothing else until it answers or the send fails.
            let queued =
                if is_snapshot { self.send_frame_beyond_cap(token, frame) } else { self.send_frame(token, frame) };
            if !queued {
                // Queue full (a slow or dead peer): drop, Raft retransmits.
                if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                    self.raft.report_snapshot_failed(to);
                }
                return;
            }
        }
    }

    // ----- clients ---------------------------------------------------------------------------------

    fn on_client_request(&mut self, token: usize, request_id: u64, request: ClientRequest) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        let waiter = Waiter { token, serial: conn.serial, request_id };
        if conn.requests_in_flight >= CLIENT_REQUESTS_IN_FLIGHT_MAX {
            let text = format!("more than {CLIENT_REQUESTS_IN_FLIGHT_MAX} requests in flight on this connection");
            return self.reply_error(waiter, ErrorCode::Overloaded, text);
        }
        conn.requests_in_flight += 1;
        match request {
            ClientRequest::Status => {
                let report = self.status_report();
                self.reply(waiter, FrameBody::Reply(ClientReply::Status(report)));
            }
            ClientRequest::Get { key, consistency: ReadConsistency::Local } => {
                let reply = self.kv.get(&key).map_or(ClientReply::NotFound, |v| ClientReply::Value(v.clone()));
                self.reply(waiter, FrameBody::Reply(reply));
            }
            ClientRequest::Get { key, consistency: ReadConsistency::Linearizable } => {
                if self.raft.role() != Role::Leader {
                    return self.reply_not_leader(waiter);
                }
                if self.reads_waiting >= READS_WAITING_MAX {
                    return self.reply_error(waiter, ErrorCode::Overloaded, "too many reads waiting".into());
                }
                self.reads_waiting += 1;
                self.reads_batch.push(ReadWaiter { waiter, key });
            }
            ClientRequest::Write(command) => {
                if self.writes_waiting.len() + self.proposals_batch.len() >= WRITES_WAITING_MAX {
                    let text = "too many writes waiting to commit".to_string();
                    return self.reply_error(waiter, ErrorCode::Overloaded, text);
                }
                if self.raft.role() != Role::Leader {
                    return self.reply_not_leader(waiter);
                }
                // Proposed together with every other write of this loop iteration: one append
                // per follower carries them all.
                self.proposals_batch.push((waiter, Bytes::from(command.to_bytes())));
            }
        }
    }

    fn reply(&mut self, waiter: Waiter, body: FrameBody) {
        let Some(conn) = self.conns.get_mut(waiter.token) else { return };
        if conn.serial != waiter.serial {
            return; // the client went away and its slot was reused
        }
        conn.requests_in_flight = conn.requests_in_flight.saturating_sub(1);
        // protocol.md §6.3: some error codes close the connection once the error is written.
        if matches!(&body, FrameBody::Error(e) if e.code.closes_connection()) {
            conn.close_after_flush = true;
        }
        if !self.send_frame(waiter.token, Frame::new(waiter.request_id, body)) {
            warn!("client on connection {} is not reading its replies; closing it", waiter.token);
            self.close(waiter.token);
        }
    }

    fn reply_error(&mut self, waiter: Waiter, code: ErrorCode, message: String) {
        self.reply(waiter, FrameBody::Error(ErrorReply::new(code, message)));
    }

    fn reply_not_leader(&mut self, waiter: Waiter) {
        let leader_id = self.raft.leader();
        let leader_addr = if leader_id == self.cfg.id {
            String::new()
        } else {
            self.cfg.peers.get(&leader_id).cloned().unwrap_or_default()
        };
        let leader_id = if leader_addr.is_empty() { 0 } else { leader_id };
        self.reply(waiter, FrameBody::Reply(ClientReply::NotLeader { leader_id, leader_addr }));
    }

    fn propose_batch(&mut self) {
        if self.proposals_batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.proposals_batch);
        let results = self.raft.propose_batch(batch.iter().map(|(_, data)| data.clone()));
        let term = self.raft.term();
        for ((waiter, _), result) in batch.into_iter().zip(results) {
            match result {
                Ok(index) => {
                    self.writes_waiting.insert(index, WriteWaiter { waiter, term });
                }
                Err(ProposeError::NotLeader { .. }) => self.reply_not_leader(waiter),
                Err(ProposeError::Busy) => {
                    self.reply_error(waiter, ErrorCode::Overloaded, "too many uncommitted entries".into())
                }
            }
        }
    }

    fn start_read_round(&mut self) {
        if self.reads_batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.reads_batch);
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.reads_awaiting_confirm.insert(ctx, batch);
            }
            Err(e) => self.fail_reads(batch, e),
        }
    }

    fn fail_reads(&mut self, batch: Vec<ReadWaiter>, reason: ProposeError) {
        self.reads_waiting = self.reads_waiting.saturating_sub(batch.len());
        for read in batch {
            match reason {
                ProposeError::NotLeader { .. } => self.reply_not_leader(read.waiter),
                ProposeError::Busy => self.reply_error(read.waiter, ErrorCode::Overloaded, "too many reads".into()),
            }
        }
    }

    fn serve_reads(&mut self) {
        let applied = self.kv.applied_index();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.reads_awaiting_apply).into_iter().partition(|(index, _)| *index <= applied);
        self.reads_awaiting_apply = waiting;
        for (_, batch) in ready {
            self.reads_waiting = self.reads_waiting.saturating_sub(batch.len());
            for read in batch {
                let reply = self.kv.get(&read.key).map_or(ClientReply::NotFound, |v| ClientReply::Value(v.clone()));
                self.reply(read.waiter, FrameBody::Reply(reply));
            }
        }
    }

    fn status_report(&self) -> StatusReport {
        let role = match self.raft.role() {
            Role::Follower => NodeRole::Follower,
            Role::PreCandidate => NodeRole::PreCandidate,
            Role::Candidate => NodeRole::Candidate,
            Role::Leader => NodeRole::Leader,
        };
        StatusReport {
            node_id: self.cfg.id,
            role,
            term: self.raft.term(),
            leader_id: self.raft.leader(),
            commit_index: self.raft.committed(),
            applied_index: self.kv.applied_index(),
            last_log_index: self.raft.last_index(),
            log_size_bytes: self.log_bytes,
            snapshot_index: self.snapshot_meta.index,
            snapshot_term: self.snapshot_meta.term,
            peers: self
                .raft
                .progress()
                .into_iter()
                .map(|(node_id, match_index, next_index)| PeerStatus { node_id, match_index, next_index })
                .collect(),
        }
    }

    // ----- the core --------------------------------------------------------------------------------

    fn run_ticks(&mut self) {
        let now = Instant::now();
        let mut ticks = 0;
        while self.next_tick <= now {
            self.raft.tick();
            self.next_tick += self.cfg.tick;
            ticks += 1;
            if ticks >= TICKS_CATCH_UP_MAX {
                self.next_tick = now + self.cfg.tick;
                break;
            }
        }
    }

    fn drive_ready(&mut self) -> Result<(), String> {
        while self.io_in_flight.is_none() && self.raft.has_ready() {
            let mut ready = self.raft.ready();
            self.on_soft_state(&ready);
            for message in std::mem::take(&mut ready.messages) {
                self.send_peer(message);
            }
            let mut hard_state = ready.hard_state;
            if let Some(hs) = hard_state {
                if hs.term == self.hard_state_submitted.term && hs.vote == self.hard_state_submitted.vote {
                    // Only the commit index moved. It is volatile state (paper Figure 2): it rides
                    // along with the next batch that syncs anyway instead of costing a sync.
                    self.commit_deferred = Some(hs);
                    hard_state = None;
                }
            }
            let needs_disk = ready.snapshot.is_some() || !ready.entries.is_empty() || hard_state.is_some();
            if needs_disk {
                let deferred = self.commit_deferred.take();
                let hard_state = hard_state.or(deferred);
                if let Some(hs) = hard_state {
                    self.hard_state_submitted = hs;
                }
                let job = IoJob::Persist {
                    snapshot: ready.snapshot.clone(),
                    entries: std::mem::take(&mut ready.entries),
                    hard_state,
                };
                self.storage.submit(job)?;
                self.io_in_flight = Some(ready);
            } else {
                self.finish_ready(ready)?;
            }
        }
        Ok(())
    }

    fn collect_storage_results(&mut self) -> Result<(), String> {
        while let Some(done) = self.storage.try_done() {
            match done {
                IoDone::Persisted { log_bytes } => {
                    self.log_bytes = log_bytes;
                    let Some(ready) = self.io_in_flight.take() else {
                        return Err("storage finished a batch that was never submitted".into());
                    };
                    self.finish_ready(ready)?;
                }
                IoDone::SnapshotSaved(snapshot) => {
                    // The file is durable: only now may the log forget the entries under it.
                    self.storage.submit(IoJob::CompactLog(snapshot))?;
                }
                IoDone::Compacted { snapshot, log_bytes } => {
                    self.log_bytes = log_bytes;
                    self.compaction_in_flight = false;
                    info!(
                        "snapshot at index {} (term {}) saved; log compacted",
                        snapshot.meta.index, snapshot.meta.term
                    );
                    if snapshot.meta.index > self.snapshot_meta.index {
                        self.snapshot_meta = snapshot.meta.clone();
                    }
                    if let Err(e) = self.raft.compact(snapshot) {
                        warn!("core refused compaction: {e}");
                    }
                }
                IoDone::Failed(e) => return Err(format!("storage failure, stopping to protect durability: {e}")),
            }
        }
        Ok(())
    }

    fn on_soft_state(&mut self, ready: &Ready) {
        let Some(role) = ready.role else { return };
        info!("node {} is {} in term {} (leader {})", self.cfg.id, role.name(), ready.term, ready.leader);
        let is_leader = role == Role::Leader;
        if self.was_leader && !is_leader {
            // Writes may still commit under the next leader; the client retries with the same
            // session seq, which is safe.
            let waiting = std::mem::take(&mut self.writes_waiting);
            for (_, w) in waiting {
                self.reply_error(
                    w.waiter,
                    ErrorCode::OutcomeUnknown,
                    "leadership lost before the write committed".into(),
                );
            }
            let batch = std::mem::take(&mut self.reads_batch);
            self.fail_reads(batch, ProposeError::NotLeader { leader: ready.leader });
        }
        self.was_leader = is_leader;
    }

    fn finish_ready(&mut self, ready: Ready) -> Result<(), String> {
        for message in ready.persisted_messages {
            self.send_peer(message);
        }
        if let Some(snapshot) = &ready.snapshot {
            self.kv = KvStore::restore(&snapshot.data)
                .map_err(|e| format!("snapshot {} from the leader is unusable: {e}", snapshot.meta.index))?;
            self.snapshot_meta = snapshot.meta.clone();
            info!("installed snapshot at index {} (term {}) from the leader", snapshot.meta.index, snapshot.meta.term);
            let covered: Vec<Index> = self.writes_waiting.range(..=snapshot.meta.index).map(|(&i, _)| i).collect();
            for index in covered {
                if let Some(w) = self.writes_waiting.remove(&index) {
                    self.reply_error(w.waiter, ErrorCode::OutcomeUnknown, "superseded by a snapshot".into());
                }
            }
        }
        for entry in &ready.committed_entries {
            self.apply(entry)?;
        }
        for read in &ready.read_states {
            if let Some(batch) = self.reads_awaiting_confirm.remove(&read.ctx) {
                self.reads_awaiting_apply.push((read.index, batch));
            }
        }
        for ctx in &ready.dropped_reads {
            if let Some(batch) = self.reads_awaiting_confirm.remove(ctx) {
                self.fail_reads(batch, ProposeError::NotLeader { leader: ready.leader });
            }
        }
        self.serve_reads();
        self.raft.advance();
        self.maybe_snapshot()
    }

    fn apply(&mut self, entry: &Entry) -> Result<(), String> {
        let result = match entry.kind {
            EntryKind::Noop => {
                self.kv.apply_noop(entry.index).map_err(|e| format!("apply {}: {e}", entry.index))?;
                None
            }
            EntryKind::Normal => {
                Some(self.kv.apply(entry.index, &entry.data).map_err(|e| format!("apply {}: {e}", entry.index))?)
            }
        };
        let Some(waiter) = self.writes_waiting.remove(&entry.index) else { return Ok(()) };
        let body = match result {
            _ if waiter.term != entry.term => {
                FrameBody::Error(ErrorReply::new(ErrorCode::OutcomeUnknown, "another leader's entry took this index"))
            }
            Some(ApplyResult::Applied(r)) | Some(ApplyResult::Duplicate(r)) => {
                FrameBody::Reply(ClientReply::from_write_result(&r))
            }
            Some(ApplyResult::SessionExpired { client_id, seq }) => FrameBody::Error(ErrorReply::new(
                ErrorCode::SessionExpired,
                format!("client {client_id} has no session for seq {seq}; start a new session"),
            )),
            Some(ApplyResult::StaleSequence { client_id, seq, last_seq }) => FrameBody::Error(ErrorReply::new(
                ErrorCode::StaleSequence,
                format!("client {client_id} seq {seq} is below its last applied seq {last_seq}"),
            )),
            Some(ApplyResult::Rejected(e)) => {
                FrameBody::Error(ErrorReply::new(ErrorCode::Internal, format!("command rejected: {e}")))
            }
            None => FrameBody::Error(ErrorReply::new(ErrorCode::Internal, "a no-op took this write's index")),
        };
        self.reply(waiter.waiter, body);
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let applied = self.kv.applied_index();
        if self.compaction_in_flight || applied < self.snapshot_meta.index + self.cfg.snapshot_every {
            return Ok(());
        }
        let Some(term) = self.raft.log_term(applied) else { return Ok(()) };
        let started = Instant::now();
        let snapshot = Snapshot {
            meta: SnapshotMeta { index: applied, term, conf: ConfState { voters: self.raft.voters() } },
            data: Bytes::from(self.kv.snapshot()),
        };
        let serialized = started.elapsed();
        if serialized > SNAPSHOT_SERIALIZE_WARN {
            warn!(
                "serializing the snapshot at index {applied} ({} bytes) held the event loop for {serialized:?}",
                snapshot.data.len()
            );
        }
        self.storage.save_snapshot(snapshot)?;
        self.compaction_in_flight = true;
        Ok(())
    }
}

/// Builds the core's restart state from the WAL and the newest snapshot, refusing anything with
/// a hole in it.
fn restore_state(wal: &Wal, snapshot: Option<Snapshot>) -> Result<Restored, StartError> {
    let snapshot_index = snapshot.as_ref().map_or(0, |s| s.meta.index);
    let (floor, _) = wal.snapshot_floor();
    if floor > snapshot_index {
        return Err(StartError(format!(
            "the log is compacted up to index {floor} but the newest usable snapshot covers only {snapshot_index}; \
             the data directory is missing its snapshot"
        )));
    }
    let first = snapshot_index + 1;
    let last = wal.last_index();
    let entries = if last >= first {
        if wal.first_index() > first {
            return Err(StartError(format!(
                "the log starts at index {} but the snapshot ends at {snapshot_index}: entries in between are missing",
                wal.first_index()
            )));
        }
        wal.entries(first, last + 1, usize::MAX).map_err(|e| StartError(format!("reading the log: {e}")))?
    } else {
        Vec::new()
    };
    Ok(Restored { hard_state: wal.hard_state(), snapshot, entries })
}

fn seed_from_clock(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (std::process::id() as u64) << 32 ^ id
}

fn frame_name(body: &FrameBody) -> &'static str {
    match body {
        FrameBody::Hello(_) => "Hello",
        FrameBody::HelloOk(_) => "HelloOk",
        FrameBody::Error(_) => "Error",
        FrameBody::Peer(m) => m.body.name(),
        FrameBody::SnapshotChunk(_) => "SnapshotChunk",
        FrameBody::Request(_) => "client request",
        FrameBody::Reply(_) => "client reply",
    }
}

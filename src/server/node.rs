//! The node: the event loop that ties the reactor (sockets), the peer links, the replica (core +
//! state machine) and the storage threads together.
//!
//! One loop iteration: poll (until the next tick at most) and take the frames and closes that
//! arrived; hand client requests and peer messages to the replica; collect finished storage jobs;
//! tick the core for the wall time that passed; let the replica propose this iteration's writes,
//! start one ReadIndex round and take the next ready batch; deliver what it produced (peer
//! messages, client replies, storage jobs); reap idle connections, redial peers; flush; then
//! make this iteration's ready batch durable here if the WAL thread is idle (`wal_lane.rs`).
//!
//! Invariants: frames of a connection are handled in arrival order and none after the one that
//! got it refused; every client request counted in flight on its connection is answered once.
//!
//! HTTP requests (`--http-listen`) are served on the same loop (`node_http.rs`): each is answered
//! in the iteration it arrived, from state the loop already holds, and the reactor hands up only
//! a bounded number per poll, so a scraper costs consensus at most a few renders of latency.

use std::io;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::config::NodeConfig;
use super::conn::ConnKind;
use super::node_metrics::NodeMetrics;
use super::peers::PeerLinks;
use super::reactor::{Event, Reactor, CLIENT_CONNECTIONS_MAX, CLIENT_REQUESTS_IN_FLIGHT_MAX};
use super::recovery::{recover, RecoveryOptions};
use super::replica::{Replica, ReplicaInit, SnapshotPolicy};
use super::requests::Waiter;
use super::storage_thread::{SnapshotWorker, StorageThread, WalWorker};
use crate::raft::{Message, NodeId, Raft, RaftConfig};
use crate::wire::{
    check_hello, ClientRequest, ErrorCode, ErrorReply, Frame, FrameBody, Hello, HelloOk, SnapshotChunk,
    PROTOCOL_VERSION,
};

/// How often idle connections are reaped and missing peer connections redialed: timeouts are
/// seconds long and redials back off from 50 ms, so scanning every connection on every loop
/// iteration (thousands per second under load) would be wasted work.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(50);
/// After a stall (a paused process), tick at most this many times at once.
const TICKS_CATCH_UP_MAX: u32 = 20;
/// On SIGTERM/SIGINT, waiting requests may still get their real result for this long...
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// ...the batch being made durable is waited for this long at most...
const SHUTDOWN_IO_WAIT_MAX: Duration = Duration::from_secs(10);
/// ...and the last replies are written out for this long at most.
const SHUTDOWN_FLUSH_MAX: Duration = Duration::from_secs(1);
/// A loop iteration (after its poll) that takes longer than this is logged as a stall, at most
/// once per [`LOOP_STALL_LOG_INTERVAL`] (heartbeats and replies wait for the loop).
const LOOP_STALL_WARN: Duration = Duration::from_millis(5);
const LOOP_STALL_LOG_INTERVAL: Duration = Duration::from_secs(1);

#[path = "node_http.rs"]
mod http;

/// Running, or shutting down since a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Running,
    Draining { since: Instant },
}

pub struct Node {
    cfg: NodeConfig,
    reactor: Reactor,
    peers: PeerLinks,
    /// The configuration index the peer table last followed.
    peers_conf_index: u64,
    replica: Replica,
    storage: StorageThread,
    next_tick: Instant,
    next_maintenance: Instant,
    lifecycle: Lifecycle,
    metrics: std::sync::Arc<NodeMetrics>,
    /// Reused for every HTTP response body.
    http_body: String,
    /// Stalls since the last one logged, the longest of them, and when one was last logged.
    stalls: (u64, Duration, Option<Instant>),
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
        let fs = crate::storage::fs::real();
        let opts = RecoveryOptions {
            cluster_id: cfg.cluster_id,
            node_id: cfg.id,
            wal_options: crate::storage::WalOptions::with_segment_bytes(cfg.segment_bytes),
            sole_voter: cfg.peers.len() == 1 && !cfg.join,
        };
        let recovered = recover(std::sync::Arc::clone(&fs), &cfg.data_dir, opts)?;
        let seed = seed_from_clock(cfg.id);
        // A joining node has no configuration: it learns it from the leader that adds it.
        let voters = if cfg.join { Vec::new() } else { cfg.peers.keys().copied().collect() };
        let mut raft_cfg = RaftConfig::new(cfg.id, voters, seed);
        raft_cfg.heartbeat_ticks = cfg.heartbeat_ticks;
        raft_cfg.election_ticks = cfg.election_ticks;
        raft_cfg.log_window_bytes_max = usize::try_from(cfg.log_window_bytes).unwrap_or(usize::MAX);
        let hard_state = recovered.restored.hard_state;
        let raft = Raft::new(raft_cfg, recovered.restored)
            .map_err(|e| StartError(format!("inconsistent durable state: {e}")))?;
        let others: Vec<NodeId> = cfg.peers.keys().copied().filter(|&id| id != cfg.id).collect();
        let metrics = std::sync::Arc::new(
            NodeMetrics::new(&others).map_err(|e| StartError(format!("cannot register metrics: {e}")))?,
        );
        let mut replica = Replica::new(ReplicaInit {
            raft,
            kv: recovered.kv,
            hard_state,
            snapshot_meta: recovered.snapshot_meta,
            addresses: cfg.client_addresses(),
            snapshot_policy: SnapshotPolicy { entries: cfg.snapshot_every, log_bytes: cfg.snapshot_log_bytes },
            sessions_max: cfg.sessions_max,
            snapshot_chunk_bytes: crate::wire::SNAPSHOT_CHUNK_BYTES,
            record_applied: false,
        });
        // Every hot-path update goes through one of these handles; `--metrics off` hands none out.
        let updates = cfg.metrics_updates.then(|| std::sync::Arc::clone(&metrics));
        if let Some(m) = &updates {
            replica.attach_metrics(std::sync::Arc::clone(m));
        }
        let (mut reactor, waker) = Reactor::bind(cfg.listen).map_err(StartError)?;
        reactor.watch_signals().map_err(StartError)?;
        if let Some(m) = &updates {
            reactor.set_metrics(std::sync::Arc::clone(m));
        }
        if let Some(http) = cfg.http_listen {
            reactor.bind_http(http).map_err(StartError)?;
            replica.set_http_addr(reactor.http_local_addr().map(|a| a.to_string()));
        }
        let mut wal_worker = WalWorker::new(recovered.wal, recovered.meta, cfg.segment_bytes);
        let mut snapshot_worker = SnapshotWorker::new(fs, recovered.snapshots);
        if let Some(m) = &updates {
            wal_worker = wal_worker.with_metrics(std::sync::Arc::clone(m));
            snapshot_worker = snapshot_worker.with_metrics(std::sync::Arc::clone(m));
        }
        let storage = StorageThread::spawn(wal_worker, snapshot_worker, waker, cfg.wal_on_loop)
            .map_err(|e| StartError(format!("cannot start the storage thread: {e}")))?;
        let mut peers = PeerLinks::new(cfg.id, cfg.cluster_id, cfg.peers.clone(), seed);
        if let Some(m) = updates {
            peers.set_metrics(m);
        }
        info!("node {} listening on {} (cluster {}, peers {:?})", cfg.id, cfg.listen, cfg.cluster_id, cfg.peers);
        if let Some(http) = reactor.http_local_addr() {
            info!("node {} serving /metrics, /status and /health on http://{http}", cfg.id);
        }
        let now = Instant::now();
        let lifecycle = Lifecycle::Running;
        let http_body = String::new();
        Ok(Node {
            next_tick: now + cfg.tick,
            next_maintenance: now,
            lifecycle,
            cfg,
            reactor,
            peers,
            peers_conf_index: u64::MAX,
            replica,
            storage,
            metrics,
            http_body,
            stalls: (0, Duration::ZERO, None),
        })
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.reactor.local_addr()
    }

    /// The HTTP listener's address, if `--http-listen` was given.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.reactor.http_local_addr()
    }

    /// Runs the event loop until a fatal error (a storage failure or a broken invariant), or
    /// until a graceful shutdown completes after SIGTERM/SIGINT (`Ok`). A second signal during
    /// the shutdown stops the node at once (`Err`).
    pub fn run(mut self) -> Result<(), String> {
        loop {
            let timeout = if self.storage.has_loop_work() {
                Duration::ZERO // a batch synced on the loop (or one to sync): no sleeping
            } else {
                self.next_tick.saturating_duration_since(Instant::now())
            };
            let events = self.reactor.poll(timeout)?;
            let busy_since = Instant::now();
            self.handle_events(events)?;
            while let Some(done) = self.storage.try_done() {
                self.replica.on_io_done(done)?;
            }
            self.run_ticks();
            self.replica.flush()?;
            self.deliver()?;
            self.maintain_connections()?;
            self.reactor.flush_all();
            // After the flush: a leader's appends are on the wire while it syncs its own copy.
            self.storage.run_deferred()?;
            self.note_stall(busy_since);
            if self.shutdown_finished()? {
                return Ok(());
            }
        }
    }

    /// Logs an iteration that held the loop longer than [`LOOP_STALL_WARN`] (rate-limited).
    fn note_stall(&mut self, busy_since: Instant) {
        let now = Instant::now();
        let busy = now.saturating_duration_since(busy_since);
        if busy <= LOOP_STALL_WARN {
            return;
        }
        let (count, longest, last_logged) = &mut self.stalls;
        *count += 1;
        *longest = (*longest).max(busy);
        if last_logged.is_none_or(|at| now.saturating_duration_since(at) >= LOOP_STALL_LOG_INTERVAL) {
            warn!("event loop stall: an iteration took {busy:?} ({count} above {LOOP_STALL_WARN:?} since the last report, longest {longest:?})");
            self.stalls = (0, Duration::ZERO, Some(now));
        }
    }

    /// The first signal: stop accepting, refuse new requests, let waiting ones finish.
    fn on_signal(&mut self) -> Result<(), String> {
        if let Lifecycle::Draining { .. } = self.lifecycle {
            return Err("a second signal during shutdown: stopping at once".into());
        }
        info!("node {} shutting down: no new connections or requests; a second signal stops it at once", self.cfg.id);
        self.reactor.stop_listening();
        self.lifecycle = Lifecycle::Draining { since: Instant::now() };
        // Writes that arrived before the signal in this iteration are still buffered: propose
        // them now, or the transfer below refuses them as Overloaded (a reply the drain never
        // promises; seen in CI). From here on, new requests are answered ShuttingDown.
        self.replica.flush()?;
        // A leader hands leadership to the most caught-up voter first (dissertation §3.10), so
        // the cluster does not wait an election timeout for a new one.
        if self.replica.raft().role() == crate::raft::Role::Leader {
            match self.replica.transfer_leader(0) {
                Ok(to) if to != self.cfg.id => {
                    info!("node {} transfers leadership to node {to} before stopping", self.cfg.id)
                }
                Ok(_) => {}
                Err(e) => info!("node {} stops without a leadership transfer: {e}", self.cfg.id),
            }
        }
        Ok(())
    }

    /// While draining: once nothing waits (or the grace period ended), answer what is left with
    /// `ShuttingDown`, wait for the batch in flight, write the last replies, and stop.
    fn shutdown_finished(&mut self) -> Result<bool, String> {
        let Lifecycle::Draining { since } = self.lifecycle else { return Ok(false) };
        let elapsed = since.elapsed();
        if self.replica.has_waiting_requests() && elapsed < SHUTDOWN_GRACE {
            return Ok(false);
        }
        let transferring =
            self.replica.raft().role() == crate::raft::Role::Leader && self.replica.raft().transfer_target().is_some();
        if transferring && elapsed < SHUTDOWN_GRACE {
            return Ok(false); // ends within an election timeout, one way or the other
        }
        self.replica.abandon_all_requests();
        self.deliver()?;
        if self.replica.io_busy() && elapsed < SHUTDOWN_IO_WAIT_MAX {
            return Ok(false);
        }
        let flush_until = Instant::now() + SHUTDOWN_FLUSH_MAX;
        while self.reactor.has_pending_writes() && Instant::now() < flush_until {
            self.reactor.flush_all();
            let _ = self.reactor.poll(Duration::from_millis(10))?;
        }
        info!("node {} stopped after {:?}", self.cfg.id, since.elapsed());
        Ok(true)
    }

    fn handle_events(&mut self, events: Vec<Event>) -> Result<(), String> {
        let mut events = events;
        while !events.is_empty() {
            for event in events {
                match event {
                    // Frames after the one that got their connection refused are not handled.
                    Event::Frame { token, frame } if self.reactor.is_open(token) => self.on_frame(token, frame),
                    Event::Frame { .. } => {}
                    Event::Invalid { token, request_id, reply } => self.reactor.refuse(token, request_id, reply),
                    Event::Eof { token } => self.reactor.end_of_input(token),
                    Event::Closed { token, kind } => {
                        if let Some(peer) = self.peers.on_closed(token, kind) {
                            // Anything queued (including a snapshot) is lost; the core re-sends.
                            self.replica.snapshot_send_failed(peer);
                        }
                    }
                    Event::Signal => self.on_signal()?,
                    Event::HttpRequest { token, serial, request } => self.serve_http(token, serial, request),
                }
            }
            events = self.reactor.take_events();
        }
        Ok(())
    }

    /// Hands the replica's output to the sockets and the storage threads.
    fn deliver(&mut self) -> Result<(), String> {
        let conf_index = self.replica.raft().configuration_index();
        if conf_index != self.peers_conf_index {
            // The peer table follows the configuration in force (`--peers` only bootstraps it).
            self.peers_conf_index = conf_index;
            self.peers.add_members(&self.replica.member_addresses());
        }
        let output = self.replica.take_output();
        for message in &output.messages {
            self.send_peer(message);
        }
        for (waiter, body) in output.replies {
            self.reactor.answer(waiter, body);
        }
        for job in output.jobs {
            self.storage.submit(job)?;
        }
        for leader in output.snapshot_rejections {
            self.peers.close_links_of(&mut self.reactor, leader);
        }
        self.send_snapshot_chunks();
        let closed = self.reactor.take_events();
        self.handle_events(closed)
    }

    fn send_peer(&mut self, message: &Message) {
        let _ = self.peers.send(&mut self.reactor, message);
    }

    /// Hands snapshot chunks to the links that have room; a chunk that cannot be queued ends its
    /// transfer (the core probes again and the transfer starts over).
    fn send_snapshot_chunks(&mut self) {
        for to in self.replica.snapshot_chunks_ready() {
            if !self.peers.has_snapshot_room(&self.reactor, to) {
                continue;
            }
            let Some(chunk) = self.replica.take_snapshot_chunk(to) else { continue };
            if !self.peers.send_chunk(&mut self.reactor, chunk) {
                self.replica.snapshot_send_failed(to);
            }
        }
    }

    fn run_ticks(&mut self) {
        let now = Instant::now();
        let mut ticks = 0;
        while self.next_tick <= now {
            self.replica.tick();
            self.next_tick += self.cfg.tick;
            ticks += 1;
            if ticks >= TICKS_CATCH_UP_MAX {
                self.next_tick = now + self.cfg.tick;
                break;
            }
        }
    }

    /// Reaps idle and half-open connections and dials peers we have no connection to.
    fn maintain_connections(&mut self) -> Result<(), String> {
        let now = Instant::now();
        if now < self.next_maintenance {
            return Ok(());
        }
        self.next_maintenance = now + MAINTENANCE_INTERVAL;
        self.reactor.reap_idle(now);
        self.peers.dial_due(&mut self.reactor, now);
        let closed = self.reactor.take_events();
        self.handle_events(closed)
    }

    // ----- frames ----------------------------------------------------------------------------------

    fn on_frame(&mut self, token: usize, frame: Frame) {
        let Some(kind) = self.reactor.kind(token) else { return };
        match (kind, frame.body) {
            (ConnKind::AwaitingHello, FrameBody::Hello(hello)) => self.on_hello(token, frame.request_id, hello),
            (ConnKind::AwaitingHello, _) => self.reactor.refuse(
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
            ) => self.on_snapshot_chunk(token, peer, chunk),
            (ConnKind::OutboundPeer { peer, ready: false }, FrameBody::HelloOk(ok)) => {
                if !self.peers.on_hello_ok(&mut self.reactor, token, peer, &ok) {
                    self.reactor.close(token);
                }
            }
            (ConnKind::OutboundPeer { peer, .. }, FrameBody::Error(e)) => {
                warn!("peer {peer} refused our connection: {} {}", e.code.to_u16(), e.message);
                self.reactor.close(token);
            }
            (_, body) => {
                let text = format!("{:?} frame not allowed on a {kind:?} connection", body.name());
                self.reactor.refuse(token, frame.request_id, ErrorReply::new(ErrorCode::UnexpectedMessage, text));
            }
        }
    }

    fn on_hello(&mut self, token: usize, request_id: u64, hello: Hello) {
        if let Err(reply) = check_hello(&hello, self.cfg.cluster_id) {
            return self.reactor.refuse(token, request_id, reply);
        }
        let kind = match hello.role {
            crate::wire::Role::Client => {
                let clients = self.reactor.client_count();
                if clients >= CLIENT_CONNECTIONS_MAX {
                    let text = format!("{clients} client connections open; try again later");
                    return self.reactor.refuse(token, request_id, ErrorReply::new(ErrorCode::Overloaded, text));
                }
                ConnKind::Client
            }
            crate::wire::Role::Peer => {
                // A member of the configuration in force, or anyone of this cluster while this
                // node has no configuration yet (it joins: the leader that added it dials it).
                let conf = self.replica.raft().configuration();
                let known = self.peers.is_peer(hello.node_id) || conf.is_member(hello.node_id) || conf.is_empty();
                if known && !self.peers.is_peer(hello.node_id) {
                    self.peers.add_members(&[(hello.node_id, String::new())]);
                }
                if hello.node_id == self.cfg.id || !known {
                    let text = format!("node {} is not a peer of node {}", hello.node_id, self.cfg.id);
                    return self.reactor.refuse(token, request_id, ErrorReply::new(ErrorCode::BadHello, text));
                }
                ConnKind::InboundPeer(hello.node_id)
            }
        };
        let ok = HelloOk { cluster_id: self.cfg.cluster_id, node_id: self.cfg.id, protocol_version: PROTOCOL_VERSION };
        self.reactor.set_kind(token, kind);
        self.reactor.send(token, &Frame::new(request_id, FrameBody::HelloOk(ok)));
        if let ConnKind::InboundPeer(peer) = kind {
            self.peers.on_inbound_hello(&mut self.reactor, peer, token);
        }
    }

    fn on_peer_message(&mut self, token: usize, peer: NodeId, message: Message) {
        if message.from != peer || message.to != self.cfg.id {
            let text = format!("message from {} to {} on node {peer}'s connection", message.from, message.to);
            return self.reactor.refuse(token, 0, ErrorReply::new(ErrorCode::UnexpectedMessage, text));
        }
        if let Err(why) = message.validate() {
            warn!("dropping a {} from peer {peer} and closing its connection: {why}", message.body.name());
            let text = format!("invalid {}: {why}", message.body.name());
            return self.reactor.refuse(token, 0, ErrorReply::new(ErrorCode::MalformedFrame, text));
        }
        self.peers.heard_from(peer, &message.body);
        self.replica.step(message);
    }

    fn on_snapshot_chunk(&mut self, token: usize, peer: NodeId, chunk: SnapshotChunk) {
        if chunk.from != peer || chunk.to != self.cfg.id {
            let text = format!("snapshot chunk from {} to {} on node {peer}'s connection", chunk.from, chunk.to);
            return self.reactor.refuse(token, 0, ErrorReply::new(ErrorCode::UnexpectedMessage, text));
        }
        if let Err(why) = self.replica.snapshot_chunk_received(chunk) {
            warn!("dropping a snapshot stream from peer {peer}: {why}");
            let reply = ErrorReply::new(ErrorCode::MalformedFrame, format!("snapshot chunk refused: {why}"));
            self.reactor.refuse(token, 0, reply);
        }
    }

    fn on_client_request(&mut self, token: usize, request_id: u64, request: ClientRequest) {
        let Some(serial) = self.reactor.serial(token) else { return };
        if let Lifecycle::Draining { .. } = self.lifecycle {
            let reply = ErrorReply::new(ErrorCode::ShuttingDown, "the node is shutting down; try another");
            self.reactor.send(token, &Frame::new(request_id, FrameBody::Error(reply)));
            self.reactor.stop_reading_after_flush(token);
            return;
        }
        if !self.reactor.request_started(token) {
            let text = format!("more than {CLIENT_REQUESTS_IN_FLIGHT_MAX} requests in flight on this connection");
            let reply = FrameBody::Error(ErrorReply::new(ErrorCode::Overloaded, text));
            self.reactor.send(token, &Frame::new(request_id, reply));
            return;
        }
        self.replica.client_request(Waiter { token, serial, request_id }, request);
    }
}

fn seed_from_clock(id: NodeId) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (std::process::id() as u64) << 32 ^ id
}

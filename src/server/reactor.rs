//! The reactor: one mio poll, the listener, a slab of connections, and the work every connection
//! needs whatever it carries — accept, read and decode frames, queue and flush writes, close,
//! reap the idle. It knows frames and connection kinds, not Raft: decoded frames go up to the
//! node as [`Event`]s, and every closed connection is reported so that peer links can redial.
//!
//! Bounds: connections ([`CONNECTIONS_MAX`], of which at most [`HANDSHAKES_MAX`] before `Hello`
//! and [`CLIENT_CONNECTIONS_MAX`] clients, leaving room for peers), per-connection write queues
//! ([`CLIENT_QUEUE_BYTES_MAX`], [`PEER_QUEUE_BYTES_MAX`]) and client requests in flight per
//! connection ([`CLIENT_REQUESTS_IN_FLIGHT_MAX`]). Frames are bounded by the decoder.
//!
//! Invariants: a connection is answered only while its serial matches (a reused slab slot never
//! receives another connection's reply); every close is reported exactly once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::conn::{ConnKind, Connection};
use super::requests::Waiter;
use crate::wire::{ErrorReply, Frame, FrameBody};

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
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// An outbound peer connection with queued bytes and no write progress for this long is
/// presumed half-open and redialed.
const PEER_STALL_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Readiness events taken per poll.
const EVENTS_PER_POLL_MAX: usize = 1024;

/// What happened on the network since the last call.
#[derive(Debug)]
pub enum Event {
    /// A complete, decoded frame arrived on `token`.
    Frame { token: usize, frame: Frame },
    /// The byte stream on `token` broke the protocol here; the frames before it came first.
    /// The node answers with `reply` and closes (`Reactor::refuse`).
    Invalid { token: usize, request_id: u64, reply: ErrorReply },
    /// The peer shut down its sending side after the frames before this event. The node
    /// passes it back to [`Reactor::end_of_input`] once those frames were handled, so that a
    /// client's last requests are answered before its connection closes.
    Eof { token: usize },
    /// The connection is gone (closed by either side, refused, or reaped).
    Closed { token: usize, kind: ConnKind },
}

/// The event loop's sockets. See the module doc.
pub struct Reactor {
    poll: Poll,
    events: Events,
    listener: TcpListener,
    conns: Slab<Connection>,
    next_serial: u64,
    /// Connections whose last read stopped at the fairness budget.
    read_again: Vec<usize>,
    /// The last accept failed (e.g. out of file descriptors): retry next iteration.
    accept_again: bool,
    /// Events produced between polls (closes done on the node's behalf).
    pending: Vec<Event>,
}

impl Reactor {
    /// Binds the listener and creates the poll and the waker other threads use to wake it.
    pub fn bind(listen: SocketAddr) -> Result<(Reactor, Arc<Waker>), String> {
        let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
        let mut listener = TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| format!("cannot register the listener: {e}"))?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| format!("cannot create waker: {e}"))?);
        let reactor = Reactor {
            poll,
            events: Events::with_capacity(EVENTS_PER_POLL_MAX),
            listener,
            conns: Slab::new(),
            next_serial: 1,
            read_again: Vec::new(),
            accept_again: false,
            pending: Vec::new(),
        };
        Ok((reactor, waker))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Waits for readiness (at most `timeout`, or not at all if reads are owed), then accepts,
    /// reads and writes. Returns every frame and close since the last call, in order.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<Event>, String> {
        let timeout = if self.read_again.is_empty() { timeout } else { Duration::ZERO };
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
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
        let ready: Vec<(Token, bool, bool)> =
            self.events.iter().map(|e| (e.token(), e.is_readable(), e.is_writable())).collect();
        for (token, readable, writable) in ready {
            match token {
                LISTENER => self.accept_all(),
                WAKER => {}
                Token(index) => {
                    if writable {
                        self.on_writable(index);
                    }
                    if readable {
                        self.read_from(index);
                    }
                }
            }
        }
        Ok(self.take_events())
    }

    /// Events produced by calls made since the last poll (closes, mostly).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.pending)
    }

    // ----- connections ---------------------------------------------------------------------------

    pub fn kind(&self, token: usize) -> Option<ConnKind> {
        self.conns.get(token).map(|c| c.kind)
    }

    pub fn set_kind(&mut self, token: usize, kind: ConnKind) {
        if let Some(conn) = self.conns.get_mut(token) {
            conn.kind = kind;
        }
    }

    pub fn is_open(&self, token: usize) -> bool {
        self.conns.get(token).is_some_and(|c| !c.close_after_flush)
    }

    pub fn client_count(&self) -> usize {
        self.conns.iter().filter(|(_, c)| c.kind == ConnKind::Client).count()
    }

    /// Mutable access for the snapshot reassembly that lives on each peer connection.
    pub fn connection_mut(&mut self, token: usize) -> Option<&mut Connection> {
        self.conns.get_mut(token)
    }

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

    /// Starts a non-blocking connect to `addr`; the connection is usable once writable.
    pub fn connect(&mut self, addr: SocketAddr, kind: ConnKind, queue_max: usize) -> io::Result<usize> {
        let stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        let token = self.add_connection(stream, kind, queue_max).ok_or_else(|| io::Error::other("cannot register"))?;
        if let Some(conn) = self.conns.get_mut(token) {
            conn.connecting = true;
        }
        Ok(token)
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

    fn on_writable(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.connecting {
            match (conn.stream.take_error(), conn.stream.peer_addr()) {
                (Ok(None), Ok(_)) => conn.connecting = false,
                (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
                (Ok(Some(e)), _) | (Err(e), _) | (_, Err(e)) => {
                    debug!("connect failed: {e}");
                    self.close(token);
                    return;
                }
            }
        }
        self.flush(token);
    }

    fn read_from(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.close_after_flush || conn.half_closed || conn.read_paused || conn.connecting || conn.broken {
            return;
        }
        let outcome = conn.read();
        for raw in outcome.frames {
            let request_id = raw.request_id;
            match Frame::decode(raw) {
                Ok(frame) => self.pending.push(Event::Frame { token, frame }),
                Err(e) => {
                    self.invalid(token, request_id, ErrorReply::from_wire_error(&e));
                    return;
                }
            }
        }
        if let Some(e) = outcome.error {
            self.invalid(token, 0, ErrorReply::from_wire_error(&e));
            return;
        }
        if outcome.eof {
            if let Some(conn) = self.conns.get_mut(token) {
                conn.half_closed = true; // nothing more to read
            }
            self.pending.push(Event::Eof { token });
            return;
        }
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.over_high_watermark() {
            conn.read_paused = true; // resumed by flush() once the client drains its replies
        } else if outcome.more {
            self.read_again.push(token);
        }
    }

    /// The input of `token` ended and every frame before the end was handled: close it, unless
    /// it is a client still waiting for replies (it may shut down its sending side and wait).
    pub fn end_of_input(&mut self, token: usize) {
        let Some(conn) = self.conns.get(token) else { return };
        let waiting = conn.kind == ConnKind::Client && (conn.requests_in_flight > 0 || conn.has_pending_writes());
        if !waiting {
            self.close(token);
        }
    }

    /// Reports a protocol violation in order with the frames before it, and reads no more.
    fn invalid(&mut self, token: usize, request_id: u64, reply: ErrorReply) {
        if let Some(conn) = self.conns.get_mut(token) {
            conn.broken = true;
        }
        self.pending.push(Event::Invalid { token, request_id, reply });
    }

    /// Sends an error frame, then closes the connection once it is written.
    pub fn refuse(&mut self, token: usize, request_id: u64, reply: ErrorReply) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        info!("refusing connection {token} ({:?}): {} {}", conn.kind, reply.code.to_u16(), reply.message);
        if let Ok(bytes) = Frame::new(request_id, FrameBody::Error(reply)).to_bytes() {
            conn.queue(bytes);
        }
        conn.close_after_flush = true;
        self.flush(token);
    }

    /// Closes `token` now and reports it.
    pub fn close(&mut self, token: usize) {
        if !self.conns.contains(token) {
            return;
        }
        let mut conn = self.conns.remove(token);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.pending.push(Event::Closed { token, kind: conn.kind });
    }

    // ----- writing -------------------------------------------------------------------------------

    /// Queues a frame within the connection's cap. False if it does not fit or cannot be encoded.
    pub fn send(&mut self, token: usize, frame: &Frame) -> bool {
        self.queue(token, frame, false)
    }

    /// Queues a frame even past the cap (snapshot chunks: bounded by one snapshot per peer).
    pub fn send_beyond_cap(&mut self, token: usize, frame: &Frame) -> bool {
        self.queue(token, frame, true)
    }

    fn queue(&mut self, token: usize, frame: &Frame, beyond_cap: bool) -> bool {
        let Some(conn) = self.conns.get_mut(token) else { return false };
        match frame.to_bytes() {
            Ok(bytes) if beyond_cap => conn.queue_beyond_cap(bytes),
            Ok(bytes) => conn.queue(bytes),
            Err(e) => {
                log::error!("cannot encode a {} frame: {e}", frame.body.name());
                false
            }
        }
    }

    /// Counts a client request in flight on `token`. False (nothing counted) at the cap.
    pub fn request_started(&mut self, token: usize) -> bool {
        let Some(conn) = self.conns.get_mut(token) else { return false };
        if conn.requests_in_flight >= CLIENT_REQUESTS_IN_FLIGHT_MAX {
            return false;
        }
        conn.requests_in_flight += 1;
        true
    }

    /// The waiter's request was answered: queue the reply on its connection, if it is still the
    /// same connection. A client whose reply queue is full is not reading: it is closed.
    pub fn answer(&mut self, waiter: Waiter, body: FrameBody) {
        let Some(conn) = self.conns.get_mut(waiter.token) else { return };
        if conn.serial != waiter.serial {
            return; // the client went away and its slot was reused
        }
        conn.requests_in_flight = conn.requests_in_flight.saturating_sub(1);
        // protocol.md §6.3: some error codes close the connection once the error is written.
        if matches!(&body, FrameBody::Error(e) if e.code.closes_connection()) {
            conn.close_after_flush = true;
        }
        if !self.send(waiter.token, &Frame::new(waiter.request_id, body)) {
            warn!("client on connection {} is not reading its replies; closing it", waiter.token);
            self.close(waiter.token);
        }
    }

    pub fn serial(&self, token: usize) -> Option<u64> {
        self.conns.get(token).map(|c| c.serial)
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

    /// Writes whatever every connection has queued, as far as the sockets take it.
    pub fn flush_all(&mut self) {
        let dirty: Vec<usize> = self.conns.iter().filter(|(_, c)| c.has_pending_writes()).map(|(t, _)| t).collect();
        for token in dirty {
            self.flush(token);
        }
    }

    /// Closes connections that outlived their timeouts: handshakes that never finished, idle
    /// clients and peers, outbound peer connections that stalled or never connected.
    pub fn reap_idle(&mut self, now: Instant) {
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
    }
}

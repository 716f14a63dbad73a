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
//! HTTP (`--http-listen`) is a second listener on the same poll with its own connection kind and
//! bounds; `reactor_http.rs` holds that side.
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

use super::conn::{ConnKind, Connection, Traffic, READ_CHUNK_BYTES};
use super::http::Request as HttpRequest;
use super::node_metrics::NodeMetrics;
use super::requests::Waiter;
use crate::wire::{ClientReply, ErrorCode, ErrorReply, Frame, FrameBody};

#[path = "reactor_http.rs"]
mod http;
use http::HTTP_LISTENER;
pub use http::{
    HTTP_CONNECTIONS_MAX, HTTP_HEAD_TIMEOUT, HTTP_IDLE_TIMEOUT, HTTP_QUEUE_BYTES_MAX, HTTP_REQUESTS_PER_POLL_MAX,
};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

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
/// A client with replies waiting and no write progress for this long is not reading them: it
/// is closed (protocol.md §3.3). Until then it is only slowed down.
pub const CLIENT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);
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
    /// A complete HTTP request on `token`; answer it with [`Reactor::http_respond`] (nothing
    /// more is read from that connection until then).
    HttpRequest { token: usize, serial: u64, request: HttpRequest },
    /// SIGTERM or SIGINT arrived (once per signal, as far as the self-pipe tells).
    Signal,
}

/// The event loop's sockets. See the module doc.
pub struct Reactor {
    poll: Poll,
    events: Events,
    /// `None` once the node stopped accepting (shutting down).
    listener: Option<TcpListener>,
    /// The read end of the signal self-pipe, once signals are watched.
    signals: Option<mio::net::UnixStream>,
    conns: Slab<Connection>,
    next_serial: u64,
    /// Connections whose last read stopped at the fairness budget.
    read_again: Vec<usize>,
    /// The last accept failed (e.g. out of file descriptors): retry next iteration.
    accept_again: bool,
    /// Events produced between polls (closes done on the node's behalf).
    pending: Vec<Event>,
    /// The HTTP listener (`--http-listen`), if any (`reactor_http.rs`).
    http_listener: Option<TcpListener>,
    /// HTTP requests handed up since the last poll (bounded per poll).
    http_requests_this_poll: usize,
    /// Scratch buffer of every connection read ([`READ_CHUNK_BYTES`]).
    read_buf: Box<[u8]>,
    /// Where HTTP responses the reactor writes itself are counted.
    metrics: Option<Arc<NodeMetrics>>,
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
            listener: Some(listener),
            signals: None,
            conns: Slab::new(),
            next_serial: 1,
            read_again: Vec::new(),
            accept_again: false,
            pending: Vec::new(),
            http_listener: None,
            http_requests_this_poll: 0,
            read_buf: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            metrics: None,
        };
        Ok((reactor, waker))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(listener) => listener.local_addr(),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "the node stopped listening")),
        }
    }

    /// Watches SIGTERM and SIGINT: each one that arrives becomes an [`Event::Signal`]. The
    /// handlers only write a byte to a socket pair (signal-hook's self-pipe); all the work is
    /// done on the loop.
    pub fn watch_signals(&mut self) -> Result<(), String> {
        let (read, write) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("signal pipe: {e}"))?;
        read.set_nonblocking(true).map_err(|e| format!("signal pipe: {e}"))?;
        let second = write.try_clone().map_err(|e| format!("signal pipe: {e}"))?;
        for (signal, end) in [(signal_hook::consts::SIGTERM, write), (signal_hook::consts::SIGINT, second)] {
            signal_hook::low_level::pipe::register(signal, end)
                .map_err(|e| format!("cannot watch signal {signal}: {e}"))?;
        }
        let mut read = mio::net::UnixStream::from_std(read);
        self.poll
            .registry()
            .register(&mut read, SIGNALS, Interest::READABLE)
            .map_err(|e| format!("cannot register the signal pipe: {e}"))?;
        self.signals = Some(read);
        Ok(())
    }

    /// Closes the listeners: new connections are refused by the kernel from now on.
    pub fn stop_listening(&mut self) {
        for mut listener in [self.listener.take(), self.http_listener.take()].into_iter().flatten() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
    }

    /// Counts the HTTP responses the reactor writes itself (errors, refusals) in `metrics`.
    pub fn set_metrics(&mut self, metrics: Arc<NodeMetrics>) {
        self.metrics = Some(metrics);
    }

    /// Counts the bytes moved on `token` (a peer connection) in `traffic`.
    pub fn set_traffic(&mut self, token: usize, traffic: Traffic) {
        if let Some(conn) = self.conns.get_mut(token) {
            conn.traffic = Some(traffic);
        }
    }

    fn drain_signals(&mut self) {
        use std::io::Read;
        let Some(pipe) = self.signals.as_mut() else { return };
        let mut buf = [0u8; 64];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.pending.extend((0..n).map(|_| Event::Signal)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: drained
            }
        }
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
        self.http_requests_this_poll = 0;
        if std::mem::take(&mut self.accept_again) {
            self.accept_all();
            self.accept_http_all();
        }
        for token in std::mem::take(&mut self.read_again) {
            self.read_from(token, false);
        }
        // (token, readable, writable, the peer closed or the socket failed)
        let ready: Vec<(Token, bool, bool, bool)> = self
            .events
            .iter()
            .map(|e| (e.token(), e.is_readable(), e.is_writable(), e.is_read_closed() || e.is_error()))
            .collect();
        for (token, readable, writable, closed) in ready {
            match token {
                LISTENER => self.accept_all(),
                HTTP_LISTENER => self.accept_http_all(),
                WAKER => {}
                SIGNALS => self.drain_signals(),
                Token(index) => {
                    if writable {
                        self.on_writable(index);
                    }
                    if readable {
                        // A fresh readiness edge without a close: a short read drained the
                        // socket, and more data will raise another edge.
                        self.read_from(index, !closed);
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
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    debug!("accepted connection from {addr}");
                    self.admit(stream, addr);
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

    /// Takes a new connection. When every handshake slot is taken, the connection that has waited
    /// longest for its `Hello` makes room (idle sockets cannot lock real clients and peers out:
    /// a real one says `Hello` within a round trip). When every slot is taken, the newcomer is
    /// told so with an `Overloaded` error before it is closed.
    fn admit(&mut self, stream: TcpStream, addr: SocketAddr) {
        let handshaking: Vec<(usize, Instant)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.kind == ConnKind::AwaitingHello && !c.close_after_flush)
            .map(|(t, c)| (t, c.accepted_at))
            .collect();
        if handshaking.len() >= HANDSHAKES_MAX {
            if let Some(&(oldest, _)) = handshaking.iter().min_by_key(|(_, at)| *at) {
                let text = format!("{HANDSHAKES_MAX} connections are waiting to say Hello; this one waited longest");
                self.refuse(oldest, 0, ErrorReply::new(ErrorCode::Overloaded, text));
            }
        }
        let full = self.conns.len() >= CONNECTIONS_MAX;
        let Some(token) = self.add_connection(stream, ConnKind::AwaitingHello, CLIENT_QUEUE_BYTES_MAX) else { return };
        if full {
            warn!("refusing connection from {addr}: {} connections open", self.conns.len());
            let text = format!("{CONNECTIONS_MAX} connections open; try again later");
            self.refuse(token, 0, ErrorReply::new(ErrorCode::Overloaded, text));
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

    /// Reads `token`'s frames. `short_read_drains`: the read may stop at the first read that
    /// returns less than asked (saving the `EAGAIN` read) — only after a readiness edge that
    /// reported no close, since a close already signalled raises no new edge.
    fn read_from(&mut self, token: usize, short_read_drains: bool) {
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.kind == ConnKind::Http && !conn.read_paused && !conn.close_after_flush {
            return self.read_http(token);
        }
        if conn.close_after_flush || conn.half_closed || conn.read_paused || conn.connecting || conn.broken {
            return;
        }
        let outcome = conn.read(short_read_drains, &mut self.read_buf);
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
            conn.read_paused = true; // resumed by flush() once the client drained its replies
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

    /// True if any connection has bytes waiting to be written.
    pub fn has_pending_writes(&self) -> bool {
        self.conns.iter().any(|(_, c)| c.has_pending_writes())
    }

    /// Closes `token` once what is queued on it is written, reading nothing more.
    pub fn stop_reading_after_flush(&mut self, token: usize) {
        if let Some(conn) = self.conns.get_mut(token) {
            conn.close_after_flush = true;
        }
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
    /// same connection. A reply is never refused (see `conn` on backpressure): a client that
    /// does not read is closed by `reap_idle` after [`CLIENT_WRITE_STALL_TIMEOUT`].
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
        let hint = reply_len_hint(&body);
        if !conn.queue_reply(Frame::new(waiter.request_id, body), hint) {
            log::error!("cannot encode a reply on connection {}", waiter.token);
        }
        if conn.over_high_watermark() {
            conn.read_paused = true;
        }
    }

    pub fn queued_bytes(&self, token: usize) -> Option<usize> {
        self.conns.get(token).map(|c| c.queued_bytes())
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
        let awaiting_http = conn.http.as_ref().is_some_and(|h| h.awaiting_response);
        let done = !conn.has_pending_writes()
            && (conn.close_after_flush || (conn.half_closed && conn.requests_in_flight == 0 && !awaiting_http));
        if done {
            self.close(token);
            return;
        }
        if conn.read_paused && conn.under_low_watermark() {
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
        let mut http_expired = Vec::new();
        for (token, conn) in self.conns.iter() {
            let idle = now.saturating_duration_since(conn.last_read);
            let expired = match conn.kind {
                ConnKind::Http => {
                    http_expired.extend(Reactor::http_expiry(conn, now).map(|expiry| (token, expiry)));
                    false
                }
                ConnKind::AwaitingHello => now.saturating_duration_since(conn.accepted_at) > HANDSHAKE_TIMEOUT,
                ConnKind::Client => {
                    let not_reading = conn.has_pending_writes()
                        && now.saturating_duration_since(conn.last_write_progress) > CLIENT_WRITE_STALL_TIMEOUT;
                    not_reading || (idle > CLIENT_IDLE_TIMEOUT && conn.requests_in_flight == 0)
                }
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
        for (token, expiry) in http_expired {
            self.expire_http(token, expiry);
        }
    }
}

/// About how many bytes a reply frame encodes to, for the backpressure watermarks.
fn reply_len_hint(body: &FrameBody) -> usize {
    const FRAME_OVERHEAD_BYTES: usize = 32;
    FRAME_OVERHEAD_BYTES
        + match body {
            FrameBody::Reply(ClientReply::Value(value)) => value.len(),
            FrameBody::Reply(ClientReply::CasFailed { current }) => current.as_ref().map_or(0, |v| v.len()),
            FrameBody::Error(e) => e.message.len(),
            _ => 64,
        }
}

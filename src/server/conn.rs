//! One TCP connection in the reactor: non-blocking reads into a frame decoder, and a bounded
//! write queue flushed as the socket accepts bytes.
//!
//! Partial reads and writes are the normal case. Invariants: `queued_bytes` equals the bytes in
//! `out` not yet written; it exceeds the connection's cap only by one frame (a peer message that
//! would pass the cap is refused and the caller drops it; snapshot chunks may pass it, bounded by
//! one snapshot per peer); a connection being closed (`close_after_flush`) or half-closed by its
//! peer reads no more requests.
//!
//! HTTP connections (`ConnKind::Http`, see `reactor_http.rs`) carry an [`HttpState`] instead of
//! using the frame decoder: one request is handed up at a time, and the next is parsed only once
//! its response is queued and the queue has drained below the low watermark.
//!
//! Backpressure for clients: a reply is never refused. Past the cap it waits *unencoded* in
//! `held` (a frame whose value is a `Bytes` shared with the state machine costs a few dozen bytes
//! until it is encoded) and is encoded as the socket drains. Reading requests stops above the high
//! watermark (half the cap, counting held replies) and resumes below the low one (a quarter), so a
//! client that reads its replies is slowed, never cut off; held replies are bounded by the
//! requests a connection may have in flight.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use mio::net::TcpStream;

use super::http::{HttpError, RequestParser};
use super::metrics::Counter;
use crate::raft::NodeId;
use crate::wire::{FrameDecoder, RawFrame, WireError};

/// Frames gathered into one `writev` (Linux caps an iovec at 1024 entries).
const WRITEV_FRAMES_MAX: usize = 256;
/// Bytes read from a socket per `read` call.
pub(super) const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Bytes read from one connection per readiness event before others get a turn (fairness).
const READ_BURST_BYTES: usize = 4 * 1024 * 1024;

/// Who is on the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    /// Accepted; its first frame must be `Hello`.
    AwaitingHello,
    Client,
    /// An accepted connection from a peer: we read its messages here.
    InboundPeer(NodeId),
    /// Our own dial to a peer: we send our messages here. `ready` once `HelloOk` arrived.
    OutboundPeer {
        peer: NodeId,
        ready: bool,
    },
    /// Accepted on the HTTP listener (`/metrics`, `/status`, `/health`).
    Http,
}

/// Byte counters of a peer's connections (metrics), added to as bytes move.
#[derive(Clone)]
pub struct Traffic {
    pub sent: Arc<Counter>,
    pub received: Arc<Counter>,
}

/// The HTTP side of an HTTP connection.
pub struct HttpState {
    pub parser: RequestParser,
    /// A request was handed up and its response is not queued yet: parse nothing more.
    pub awaiting_response: bool,
    /// When the head of the request now arriving had to start: the accept for the first request,
    /// its first byte for later ones. `None` while idle between requests.
    pub head_started_at: Option<Instant>,
    /// When the last response was queued (or the connection accepted).
    pub idle_since: Instant,
}

/// What one HTTP read pass did.
pub struct HttpReadOutcome {
    pub eof: bool,
    pub error: Option<HttpError>,
    /// The read stopped at its budget: more may be waiting in the socket.
    pub more: bool,
}

pub struct Connection {
    pub stream: TcpStream,
    /// Distinguishes this connection from a later one that reuses its slab slot.
    pub serial: u64,
    pub kind: ConnKind,
    decoder: FrameDecoder,
    out: VecDeque<Bytes>,
    /// Client replies waiting for room under the cap, unencoded.
    held: VecDeque<crate::wire::Frame>,
    /// Encoded size of `held` when it was queued (an estimate for the watermarks).
    held_bytes: usize,
    /// Bytes of `out.front()` already written.
    out_offset: usize,
    queued_bytes: usize,
    queued_bytes_max: usize,
    pub last_read: Instant,
    pub last_write_progress: Instant,
    /// Close once the write queue drains (after an error frame).
    pub close_after_flush: bool,
    /// The peer shut down its sending side: answer what is in flight, then close.
    pub half_closed: bool,
    pub accepted_at: Instant,
    /// Reads are paused while the write queue is above half its cap (backpressure).
    pub read_paused: bool,
    /// Outbound connect in progress.
    pub connecting: bool,
    /// The byte stream broke the protocol: nothing more is read; a refusal follows.
    pub broken: bool,
    /// Client requests accepted on this connection and not yet answered.
    pub requests_in_flight: usize,
    /// Peer connections: where the bytes moved are counted.
    pub traffic: Option<Traffic>,
    /// HTTP connections only.
    pub http: Option<Box<HttpState>>,
}

/// What one read pass produced.
pub struct ReadOutcome {
    pub frames: Vec<RawFrame>,
    /// The peer closed its end (after the frames above).
    pub eof: bool,
    /// The byte stream is not valid protocol; the connection must be refused.
    pub error: Option<WireError>,
    /// Reading stopped at the fairness budget: more input may be waiting in the socket, and no
    /// new readiness event will announce it (mio is edge-triggered).
    pub more: bool,
}

impl Connection {
    pub fn new(stream: TcpStream, serial: u64, kind: ConnKind, queued_bytes_max: usize) -> Connection {
        let now = Instant::now();
        Connection {
            stream,
            serial,
            kind,
            decoder: FrameDecoder::new(),
            out: VecDeque::new(),
            held: VecDeque::new(),
            held_bytes: 0,
            out_offset: 0,
            queued_bytes: 0,
            queued_bytes_max,
            last_read: now,
            last_write_progress: now,
            close_after_flush: false,
            half_closed: false,
            accepted_at: now,
            read_paused: false,
            connecting: false,
            broken: false,
            requests_in_flight: 0,
            traffic: None,
            http: None,
        }
    }

    /// Reads at most `budget` bytes (one pass) into the HTTP parser. The caller drains the
    /// parser's requests; what a read delivers beyond a request waits in the parser, bounded by
    /// `budget` plus one request head.
    pub fn read_http(&mut self, budget: usize) -> HttpReadOutcome {
        let mut outcome = HttpReadOutcome { eof: false, error: None, more: false };
        let Some(http) = self.http.as_mut() else { return outcome };
        let mut buf = [0u8; 4096];
        let mut left = budget;
        while left > 0 {
            let want = left.min(buf.len());
            match self.stream.read(&mut buf[..want]) {
                Ok(0) => {
                    outcome.eof = true;
                    break;
                }
                Ok(n) => {
                    left -= n;
                    outcome.more = left == 0;
                    self.last_read = Instant::now();
                    if http.head_started_at.is_none() && http.parser.buffered_bytes() == 0 {
                        http.head_started_at = Some(self.last_read);
                    }
                    if let Err(e) = http.parser.feed(&buf[..n]) {
                        outcome.error = Some(e);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    outcome.eof = true;
                    break;
                }
            }
        }
        outcome
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub fn has_pending_writes(&self) -> bool {
        !self.out.is_empty() || !self.held.is_empty()
    }

    /// Queues a client reply: encoded now if it fits under the cap, held unencoded otherwise (and
    /// behind any reply already held, to keep replies in order).
    pub fn queue_reply(&mut self, frame: crate::wire::Frame, encoded_len_hint: usize) -> bool {
        if self.held.is_empty() && self.queued_bytes + encoded_len_hint <= self.queued_bytes_max {
            return match frame.to_bytes() {
                Ok(bytes) => self.queue_beyond_cap(bytes),
                Err(_) => false,
            };
        }
        self.held_bytes += encoded_len_hint;
        self.held.push_back(frame);
        true
    }

    /// Encodes held replies while they fit under the cap.
    fn release_held(&mut self) {
        while self.queued_bytes < self.queued_bytes_max {
            let Some(frame) = self.held.pop_front() else { break };
            if let Ok(bytes) = frame.to_bytes() {
                self.held_bytes = self.held_bytes.saturating_sub(bytes.len());
                self.queue_beyond_cap(bytes);
            }
        }
        if self.held.is_empty() {
            self.held_bytes = 0;
        }
    }

    /// Queues an encoded frame. Returns false (and queues nothing) if it would exceed the cap.
    pub fn queue(&mut self, frame: Bytes) -> bool {
        if self.queued_bytes + frame.len() > self.queued_bytes_max {
            return false;
        }
        if self.out.is_empty() {
            self.last_write_progress = Instant::now();
        }
        self.queued_bytes += frame.len();
        self.out.push_back(frame);
        true
    }

    /// Queues a frame even past the cap (a snapshot chunk: its total is bounded by the snapshot
    /// size, one snapshot per peer at a time).
    pub fn queue_beyond_cap(&mut self, frame: Bytes) -> bool {
        if self.out.is_empty() {
            self.last_write_progress = Instant::now();
        }
        self.queued_bytes += frame.len();
        self.out.push_back(frame);
        true
    }

    /// Above half the cap (held replies included), stop reading requests from this connection.
    pub fn over_high_watermark(&self) -> bool {
        self.queued_bytes + self.held_bytes > self.queued_bytes_max / 2
    }

    /// Below a quarter of the cap, reading resumes.
    pub fn under_low_watermark(&self) -> bool {
        self.queued_bytes + self.held_bytes <= self.queued_bytes_max / 4
    }

    /// Reads whatever the socket has (up to a fairness budget) and decodes complete frames. With
    /// `short_read_drains` a read that returns less than the buffer ends it: the socket's queue was
    /// empty then (on Linux an edge-triggered poll raises a new edge for data that arrives later;
    /// tokio relies on the same), which saves one `EAGAIN` `recvfrom` per wakeup.
    /// `buf` is scratch space the reactor reuses for every read (a 64 KiB stack buffer zeroed at
    /// every call was 2.2% of the loop thread's samples at 64 clients); the decoder copies out of it.
    pub fn read(&mut self, short_read_drains: bool, buf: &mut [u8]) -> ReadOutcome {
        debug_assert!(!buf.is_empty());
        let mut outcome = ReadOutcome { frames: Vec::new(), eof: false, error: None, more: false };
        let mut budget = READ_BURST_BYTES;
        while budget > 0 {
            match self.stream.read(buf) {
                Ok(0) => {
                    outcome.eof = true;
                    break;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    outcome.more = budget == 0;
                    self.last_read = Instant::now();
                    if let Some(traffic) = &self.traffic {
                        traffic.received.add(n as u64);
                    }
                    if let Err(e) = self.decoder.feed(&buf[..n]) {
                        outcome.error = Some(e);
                        return outcome;
                    }
                    if short_read_drains && n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    outcome.eof = true;
                    break;
                }
            }
        }
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => outcome.frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    outcome.error = Some(e);
                    break;
                }
            }
        }
        outcome
    }

    /// Writes as much of the queue as the socket takes, many frames per `writev` so that a burst
    /// of small frames costs one system call, not one each. Returns Err on a broken connection.
    pub fn flush(&mut self) -> io::Result<()> {
        self.release_held();
        while !self.out.is_empty() {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.out.len().min(WRITEV_FRAMES_MAX));
            for (i, frame) in self.out.iter().take(WRITEV_FRAMES_MAX).enumerate() {
                let start = if i == 0 { self.out_offset } else { 0 };
                slices.push(IoSlice::new(&frame[start..]));
            }
            let written = match self.stream.write_vectored(&slices) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.consume(written);
            if self.out.is_empty() {
                self.release_held();
            }
        }
        debug_assert_eq!(self.queued_bytes, 0);
        Ok(())
    }

    /// Drops `written` bytes from the front of the queue.
    fn consume(&mut self, mut written: usize) {
        self.queued_bytes -= written;
        self.last_write_progress = Instant::now();
        if let Some(traffic) = &self.traffic {
            traffic.sent.add(written as u64);
        }
        while written > 0 {
            let Some(front) = self.out.front() else { break };
            let left = front.len() - self.out_offset;
            if written < left {
                self.out_offset += written;
                return;
            }
            written -= left;
            self.out.pop_front();
            self.out_offset = 0;
        }
    }
}

//! The reactor's HTTP side: a second listener on the same poll, and HTTP connections in the same
//! slab as the protocol ones. Requests go up to the node as [`Event::HttpRequest`], one per
//! connection at a time; malformed ones are answered here (400, 405, 413, 414, 431, 505 from
//! `http.rs`) and closed.
//!
//! Bounds (each a named constant):
//! - open HTTP connections: [`HTTP_CONNECTIONS_MAX`]; one more is answered `503` and closed, and
//!   beyond [`HTTP_REFUSING_MAX`] connections being refused at once, new ones are closed unread;
//! - request size: the parser's limits (`REQUEST_HEAD_BYTES_MAX`, `HEADER_COUNT_MAX`);
//! - bytes read per connection per readiness event: [`HTTP_READ_BURST_BYTES`];
//! - requests handed up per poll, all connections together: [`HTTP_REQUESTS_PER_POLL_MAX`] (the
//!   rest wait for the next iteration, which polls without sleeping), so scrapers cannot hold the
//!   event loop for more than a few renders at a time;
//! - queued response bytes: the next request of a connection is parsed only once its queue is
//!   below a quarter of [`HTTP_QUEUE_BYTES_MAX`]; a scraper that does not read stops being
//!   served, and is closed after [`HTTP_WRITE_STALL_TIMEOUT`];
//! - time: a request head must arrive whole within [`HTTP_HEAD_TIMEOUT`] of the connection's
//!   accept (first request) or of its first byte (later ones), or the connection gets `408` and
//!   is closed (slow loris); a keep-alive connection idle for [`HTTP_IDLE_TIMEOUT`] is closed.
//!
//! Also here, for the metrics: [`Reactor::connection_counts`], a scan of the slab by kind.
//!
//! Invariants: at most one request per connection is handed up and unanswered; responses go out
//! in request order; a connection whose request asked to close is closed once its response is
//! written.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, warn};
use mio::net::TcpListener;
use mio::{Interest, Token};

use super::{Event, Reactor};
use crate::server::conn::{ConnKind, Connection, HttpState};
use crate::server::http::{Method, Response, Status, CONTENT_TYPE_TEXT};
use crate::server::node_metrics::ConnLabel;

pub(super) const HTTP_LISTENER: Token = Token(usize::MAX - 4);

/// HTTP connections served at once (scrapers, `curl`, `raftctl watch`).
pub const HTTP_CONNECTIONS_MAX: usize = 64;
/// HTTP connections being refused with `503` at once; more are closed without an answer.
pub const HTTP_REFUSING_MAX: usize = 64;
/// Queued response bytes per connection (a `/metrics` page is tens of KiB).
pub const HTTP_QUEUE_BYTES_MAX: usize = 1 << 20;
/// Bytes read from one HTTP connection per readiness event (a request head is at most 8 KiB).
pub const HTTP_READ_BURST_BYTES: usize = 16 << 10;
/// HTTP requests handed to the node per poll, over all connections.
pub const HTTP_REQUESTS_PER_POLL_MAX: usize = 16;
/// A request head must arrive within this long (slow-loris deadline).
pub const HTTP_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A keep-alive connection with no request for this long is closed (Prometheus scrapes every
/// 15 s by default, and reconnects when it must).
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection with a response queued and no write progress for this long is closed.
pub const HTTP_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the reaper decides for an HTTP connection.
pub(super) enum HttpExpiry {
    /// Answer `408 Request Timeout`, then close.
    HeadTimeout,
    /// Close now.
    Close,
}

impl Reactor {
    /// Listens for HTTP on `addr` (same poll, second token).
    pub fn bind_http(&mut self, addr: SocketAddr) -> Result<(), String> {
        let mut listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen for HTTP on {addr}: {e}"))?;
        self.poll
            .registry()
            .register(&mut listener, HTTP_LISTENER, Interest::READABLE)
            .map_err(|e| format!("cannot register the HTTP listener: {e}"))?;
        self.http_listener = Some(listener);
        Ok(())
    }

    /// Open connections and their queued bytes, by metrics label (a scan of the slab: called
    /// when metrics are rendered, not on the hot path).
    pub fn connection_counts(&self) -> [(usize, usize); 5] {
        let mut counts = [(0usize, 0usize); 5];
        for (_, conn) in self.conns.iter() {
            let label = match conn.kind {
                ConnKind::AwaitingHello => ConnLabel::Handshake,
                ConnKind::Client => ConnLabel::Client,
                ConnKind::InboundPeer(_) => ConnLabel::PeerInbound,
                ConnKind::OutboundPeer { .. } => ConnLabel::PeerOutbound,
                ConnKind::Http => ConnLabel::Http,
            };
            let slot = &mut counts[label as usize];
            slot.0 += 1;
            slot.1 += conn.queued_bytes();
        }
        counts
    }

    pub fn http_local_addr(&self) -> Option<SocketAddr> {
        self.http_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// HTTP connections open, and how many of them are being refused or closed.
    fn http_counts(&self) -> (usize, usize) {
        let http = self.conns.iter().filter(|(_, c)| c.kind == ConnKind::Http);
        http.fold(
            (0, 0),
            |(open, closing), (_, c)| if c.close_after_flush { (open, closing + 1) } else { (open + 1, closing) },
        )
    }

    pub(super) fn accept_http_all(&mut self) {
        loop {
            let Some(listener) = self.http_listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    self.admit_http(stream, addr);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("HTTP accept failed: {e}");
                    self.accept_again = true;
                    return;
                }
            }
        }
    }

    fn admit_http(&mut self, stream: mio::net::TcpStream, addr: SocketAddr) {
        let (open, closing) = self.http_counts();
        if closing >= HTTP_REFUSING_MAX || self.conns.len() >= super::CONNECTIONS_MAX {
            debug!("dropping HTTP connection from {addr}: {open} open, {closing} closing");
            return; // dropping the stream closes it
        }
        let Some(token) = self.add_connection(stream, ConnKind::Http, HTTP_QUEUE_BYTES_MAX) else { return };
        let Some(conn) = self.conns.get_mut(token) else { return };
        let now = conn.accepted_at;
        conn.http = Some(Box::new(HttpState {
            parser: Default::default(),
            awaiting_response: false,
            head_started_at: Some(now),
            idle_since: now,
        }));
        if open >= HTTP_CONNECTIONS_MAX {
            let body = format!("{open} HTTP connections open; try again later\n");
            let response = Response::new(Status::ServiceUnavailable, CONTENT_TYPE_TEXT, body.as_bytes());
            self.http_refuse(token, response.with_headers(&[("Retry-After", "1")]).to_bytes(Method::Get), 503);
        }
    }

    /// Queues a final response and closes once it is written.
    fn http_refuse(&mut self, token: usize, response: Bytes, code: u16) {
        self.count_http_response(code);
        let Some(conn) = self.conns.get_mut(token) else { return };
        conn.queue_beyond_cap(response);
        conn.close_after_flush = true;
        if let Some(http) = conn.http.as_mut() {
            http.awaiting_response = false;
        }
        self.flush(token);
    }

    fn count_http_response(&self, code: u16) {
        if let Some(m) = &self.metrics {
            m.count_http_response(code);
        }
    }

    /// Hands up the next request already parsed, or reads (once) and tries again.
    pub(super) fn read_http(&mut self, token: usize) {
        if self.http_requests_this_poll >= HTTP_REQUESTS_PER_POLL_MAX {
            self.read_again.push(token);
            return;
        }
        let mut read = false;
        let mut more = false;
        loop {
            let Some(conn) = self.conns.get_mut(token) else { return };
            let serial = conn.serial;
            let Some(http) = conn.http.as_mut() else { return };
            if http.awaiting_response || conn.close_after_flush {
                return;
            }
            match http.parser.next_request() {
                Ok(Some(request)) => {
                    http.awaiting_response = true;
                    http.head_started_at = None;
                    self.http_requests_this_poll += 1;
                    self.pending.push(Event::HttpRequest { token, serial, request });
                    return;
                }
                Ok(None) => {}
                Err(error) => return self.http_refuse(token, error.response(), error.status().code()),
            }
            if conn.half_closed || http.parser.is_closed() {
                // Nothing more will be asked: close once what is queued is written.
                conn.close_after_flush = true;
                return self.flush(token);
            }
            if read {
                break;
            }
            read = true;
            let outcome = conn.read_http(HTTP_READ_BURST_BYTES);
            if let Some(error) = outcome.error {
                return self.http_refuse(token, error.response(), error.status().code());
            }
            conn.half_closed |= outcome.eof;
            more = outcome.more;
        }
        if more {
            // The read stopped at its budget (edge-triggered: no new event will say so).
            self.read_again.push(token);
        }
    }

    /// The node's answer to the request it was handed on `token` (if it is still that
    /// connection): queue it, close after it if it asked to, and look for the next request.
    pub fn http_respond(&mut self, token: usize, serial: u64, response: Bytes, code: u16, keep_alive: bool) {
        self.count_http_response(code);
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.serial != serial {
            return;
        }
        conn.queue_beyond_cap(response);
        let now = Instant::now();
        if let Some(http) = conn.http.as_mut() {
            http.awaiting_response = false;
            http.idle_since = now;
            if http.parser.buffered_bytes() > 0 {
                http.head_started_at = Some(now); // a pipelined request is already arriving
            }
        }
        if !keep_alive || conn.half_closed {
            conn.close_after_flush = true;
        }
        self.flush(token);
        let Some(conn) = self.conns.get_mut(token) else { return };
        if conn.under_low_watermark() {
            self.read_again.push(token);
        } else {
            conn.read_paused = true; // resumed by flush() once the scraper reads
        }
    }

    /// Whether an HTTP connection outlived a deadline (see the module doc).
    pub(super) fn http_expiry(conn: &Connection, now: Instant) -> Option<HttpExpiry> {
        let http = conn.http.as_ref()?;
        if conn.has_pending_writes() {
            let stalled = now.saturating_duration_since(conn.last_write_progress) > HTTP_WRITE_STALL_TIMEOUT;
            return stalled.then_some(HttpExpiry::Close);
        }
        if http.awaiting_response || conn.close_after_flush {
            return None;
        }
        match http.head_started_at {
            Some(at) if now.saturating_duration_since(at) > HTTP_HEAD_TIMEOUT => Some(HttpExpiry::HeadTimeout),
            Some(_) => None,
            None => (now.saturating_duration_since(http.idle_since) > HTTP_IDLE_TIMEOUT).then_some(HttpExpiry::Close),
        }
    }

    pub(super) fn expire_http(&mut self, token: usize, expiry: HttpExpiry) {
        match expiry {
            HttpExpiry::Close => self.close(token),
            HttpExpiry::HeadTimeout => {
                let body = format!("the request head did not arrive within {} s\n", HTTP_HEAD_TIMEOUT.as_secs());
                let response = Response::new(Status::RequestTimeout, CONTENT_TYPE_TEXT, body.as_bytes());
                self.http_refuse(token, response.to_bytes(Method::Get), 408);
            }
        }
    }
}

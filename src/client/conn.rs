//! One blocking connection to one node: connect, handshake, send a request, wait for its reply
//! (or, for pipelining, send requests and take replies as they come).
//!
//! Every blocking call is bounded by an `Instant` the caller passes in; no call waits past it.
//! Replies are matched by request id; a stray reply (for an id this connection no longer waits for)
//! is skipped. Any failure leaves the connection unusable: the caller drops it.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::error::Failure;
use crate::wire::{
    ClientReply, ClientRequest, ErrorCode, Frame, FrameBody, FrameDecoder, Hello, Role, PROTOCOL_VERSION,
};

/// Bytes read from the socket per `read` call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The request id of the `Hello`; requests count up from the next one.
const HELLO_REQUEST_ID: u64 = 1;

/// A handshaken connection to the node at `addr`.
pub(crate) struct Connection {
    stream: TcpStream,
    addr: String,
    node_id: u64,
    decoder: FrameDecoder,
    next_request_id: u64,
    read_buffer: Box<[u8]>,
}

impl Connection {
    /// Connects to `addr` (waiting at most `connect_timeout`, and never past `until`) and completes
    /// the `Hello` handshake for a client of `cluster_id`.
    pub fn open(addr: &str, cluster_id: u64, connect_timeout: Duration, until: Instant) -> Result<Connection, Failure> {
        let stream = connect(addr, connect_timeout, until)?;
        stream.set_nodelay(true).map_err(Failure::Io)?;
        let mut connection = Connection {
            stream,
            addr: addr.to_string(),
            node_id: 0,
            decoder: FrameDecoder::new(),
            next_request_id: HELLO_REQUEST_ID + 1,
            read_buffer: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
        };
        let hello = Hello { role: Role::Client, cluster_id, node_id: 0, protocol_version: PROTOCOL_VERSION };
        connection.send(&Frame::new(HELLO_REQUEST_ID, FrameBody::Hello(hello)), until)?;
        match connection.receive(HELLO_REQUEST_ID, until)?.body {
            FrameBody::HelloOk(ok) if ok.cluster_id == cluster_id && ok.protocol_version == PROTOCOL_VERSION => {
                connection.node_id = ok.node_id;
                Ok(connection)
            }
            FrameBody::HelloOk(ok) if ok.cluster_id != cluster_id => {
                Err(Failure::WrongCluster { cluster_id: ok.cluster_id })
            }
            FrameBody::HelloOk(ok) => Err(Failure::Server {
                code: ErrorCode::UnsupportedVersion,
                message: format!("HelloOk with protocol version {}", ok.protocol_version),
            }),
            FrameBody::Error(error) => Err(Failure::Server { code: error.code, message: error.message }),
            other => Err(Failure::Unexpected(format!("{} in answer to Hello", other.name()))),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The node id the server announced in `HelloOk`.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Sends `request` and waits until `until` for its reply. `Error` frames come back as
    /// [`Failure::Server`], `NotLeader` as [`Failure::NotLeader`].
    pub fn call(&mut self, request: &ClientRequest, until: Instant) -> Result<ClientReply, Failure> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send(&Frame::new(request_id, FrameBody::Request(request.clone())), until)?;
        match self.receive(request_id, until)?.body {
            FrameBody::Reply(ClientReply::NotLeader { leader_id, leader_addr }) => {
                Err(Failure::NotLeader { leader_id, leader_addr })
            }
            FrameBody::Reply(reply) => Ok(reply),
            FrameBody::Error(error) => Err(Failure::Server { code: error.code, message: error.message }),
            other => Err(Failure::Unexpected(format!("{} in answer to a request", other.name()))),
        }
    }

    /// Sends `request` without waiting for its reply (pipelining); returns its request id.
    pub fn send_request(&mut self, request: &ClientRequest, until: Instant) -> Result<u64, Failure> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send(&Frame::new(request_id, FrameBody::Request(request.clone())), until)?;
        Ok(request_id)
    }

    /// The next frame that arrives before `until`, whatever request it answers; `Ok(None)` if none
    /// did. A read timeout leaves the connection usable (a partial frame stays buffered).
    pub fn next_frame(&mut self, until: Instant) -> Result<Option<Frame>, Failure> {
        loop {
            if let Some(raw) = self.decoder.next_frame().map_err(Failure::Malformed)? {
                return Frame::decode(raw).map(Some).map_err(Failure::Malformed);
            }
            let Some(timeout) = remaining(until) else { return Ok(None) };
            self.stream.set_read_timeout(Some(timeout)).map_err(Failure::Io)?;
            match self.stream.read(&mut self.read_buffer) {
                Ok(0) => return Err(Failure::Closed),
                Ok(n) => self.decoder.feed(&self.read_buffer[..n]).map_err(Failure::Malformed)?,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(error) => return Err(io_failure(error, timeout)),
            }
        }
    }

    fn send(&mut self, frame: &Frame, until: Instant) -> Result<(), Failure> {
        let mut bytes = BytesMut::new();
        frame.encode(&mut bytes).map_err(Failure::Malformed)?;
        let timeout = remaining(until).ok_or(Failure::Timeout(Duration::ZERO))?;
        self.stream.set_write_timeout(Some(timeout)).map_err(Failure::Io)?;
        self.stream.write_all(&bytes).map_err(|error| io_failure(error, timeout))
    }

    /// The next frame whose request id is `request_id` (or 0, for an `Error` about the connection).
    fn receive(&mut self, request_id: u64, until: Instant) -> Result<Frame, Failure> {
        loop {
            if let Some(raw) = self.decoder.next_frame().map_err(Failure::Malformed)? {
                let frame = Frame::decode(raw).map_err(Failure::Malformed)?;
                let connection_error = frame.request_id == 0 && matches!(frame.body, FrameBody::Error(_));
                if frame.request_id == request_id || connection_error {
                    return Ok(frame);
                }
                log::debug!("{}: skipping a reply to request {}", self.addr, frame.request_id);
                continue;
            }
            let timeout = remaining(until).ok_or(Failure::Timeout(Duration::ZERO))?;
            self.stream.set_read_timeout(Some(timeout)).map_err(Failure::Io)?;
            match self.stream.read(&mut self.read_buffer) {
                Ok(0) => return Err(Failure::Closed),
                Ok(n) => self.decoder.feed(&self.read_buffer[..n]).map_err(Failure::Malformed)?,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(io_failure(error, timeout)),
            }
        }
    }
}

/// Time left until `until`, or `None` if it has passed. Never `Some(0)`: sockets refuse a zero timeout.
fn remaining(until: Instant) -> Option<Duration> {
    until.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
}

fn io_failure(error: io::Error, timeout: Duration) -> Failure {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout(timeout),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
            Failure::Closed
        }
        _ => Failure::Io(error),
    }
}

fn connect(addr: &str, connect_timeout: Duration, until: Instant) -> Result<TcpStream, Failure> {
    let addrs: Vec<_> = addr.to_socket_addrs().map_err(|error| Failure::Resolve(error.to_string()))?.collect();
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    let mut timeout = connect_timeout;
    for socket_addr in addrs {
        timeout = remaining(until).map_or(Duration::ZERO, |left| left.min(connect_timeout));
        if timeout.is_zero() {
            return Err(Failure::Connect { error: io::ErrorKind::TimedOut.into(), timeout: connect_timeout });
        }
        match TcpStream::connect_timeout(&socket_addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = error,
        }
    }
    Err(Failure::Connect { error: last_error, timeout })
}

//! One direction of one proxied connection: read from the source into a bounded queue, write the
//! queue to the destination as the link's current fault allows (hold, delay, rate-limit, reset).
//! Bytes leave in the order they came, each once; the source's end (FIN or reset) follows them.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use log::debug;

use super::{Conn, Direction, Link, Policy, BACKLOG_BYTES_MAX, BANDWIDTH_BURST, CHUNK_BYTES_MAX, IO_POLL};

/// Bytes read from the source and not yet fully written to the destination.
struct Chunk {
    bytes: Vec<u8>,
    written: usize,
    arrival: Instant,
    /// Where in `[0, jitter]` this chunk's delay falls, drawn once on arrival.
    jitter_fraction: f64,
    /// Whether the lossy fault already had its chance at this chunk.
    loss_drawn: bool,
}

/// Moves one direction of one connection: reads from the source into a queue, writes the queue to
/// the destination as the link's current fault allows.
pub(super) struct Pump<'a> {
    link: &'a Link,
    conn: &'a Conn,
    direction: Direction,
    queue: VecDeque<Chunk>,
    queued_bytes: usize,
    /// How the source ended, once it has; acted on after the bytes before it are delivered.
    source_end: Option<SourceEnd>,
    read_timeout: Option<Duration>,
    bucket: TokenBucket,
}

impl<'a> Pump<'a> {
    pub(super) fn new(link: &'a Link, conn: &'a Conn, direction: Direction) -> Pump<'a> {
        Pump {
            link,
            conn,
            direction,
            queue: VecDeque::new(),
            queued_bytes: 0,
            source_end: None,
            read_timeout: None,
            bucket: TokenBucket::new(),
        }
    }

    pub(super) fn run(mut self) {
        let mut buffer = vec![0u8; CHUNK_BYTES_MAX];
        loop {
            if self.link.stopping() {
                self.conn.reset(self.link);
            }
            if self.conn.is_reset() {
                return;
            }
            match self.step(&mut buffer) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Finished) => return,
                Err(error) => {
                    debug!("proxy {:?} to {}: resetting the connection: {error}", self.direction, self.link.target);
                    self.conn.reset(self.link);
                    return;
                }
            }
        }
    }

    /// Delivers what is due, passes on the source's end once everything before it is delivered, and
    /// reads more if there is room. An error means the connection must be reset.
    fn step(&mut self, buffer: &mut [u8]) -> io::Result<Flow> {
        let policy = self.link.policy(self.direction);
        let wait = self.deliver(&policy)?;
        if self.queue.is_empty() && !policy.hold {
            // The end of the source travels like its bytes: in order, and not through a blackhole.
            match self.source_end.take() {
                Some(SourceEnd::Fin) => {
                    let _ = self.destination().shutdown(Shutdown::Write);
                    return Ok(Flow::Finished);
                }
                Some(SourceEnd::Failed(error)) => return Err(error),
                None => {}
            }
        }
        if self.source_end.is_some() || self.queued_bytes >= BACKLOG_BYTES_MAX {
            thread::sleep(wait.min(IO_POLL));
        } else {
            self.receive(buffer, wait);
        }
        Ok(Flow::Continue)
    }

    fn source(&self) -> &'a TcpStream {
        self.conn.streams(self.direction).0
    }

    fn destination(&self) -> &'a TcpStream {
        self.conn.streams(self.direction).1
    }

    /// Writes queued chunks that are due. Returns how long to wait before there is more to do; an
    /// error means the connection must be reset.
    fn deliver(&mut self, policy: &Policy) -> io::Result<Duration> {
        if policy.hold {
            return Ok(IO_POLL);
        }
        let mut destination = self.destination();
        while let Some(chunk) = self.queue.front_mut() {
            let now = Instant::now();
            let due = chunk.arrival + policy.fixed + policy.jitter.mul_f64(chunk.jitter_fraction);
            if due > now {
                return Ok(due - now);
            }
            if !chunk.loss_drawn {
                chunk.loss_drawn = true;
                if self.link.lossy_close(policy.close_per_mille) {
                    return Err(io::Error::other("lossy link closes the connection"));
                }
            }
            let allowed = match self.bucket.available(policy.bytes_per_sec, now) {
                Ok(allowed) => allowed.min(chunk.bytes.len() - chunk.written),
                Err(wait) => return Ok(wait),
            };
            let written = match destination.write(&chunk.bytes[chunk.written..chunk.written + allowed]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(written) => written,
                // The destination is full: read meanwhile, then try again.
                Err(error) if is_timeout(&error) => return Ok(Duration::ZERO),
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            chunk.written += written;
            let finished = chunk.written == chunk.bytes.len();
            self.bucket.consume(written);
            self.queued_bytes -= written;
            self.link.count_bytes(self.direction, written);
            if finished {
                self.queue.pop_front();
            }
        }
        Ok(IO_POLL)
    }

    /// Reads one chunk from the source, waiting at most `wait` (capped at [`IO_POLL`]).
    fn receive(&mut self, buffer: &mut [u8], wait: Duration) {
        let timeout = Some(wait.clamp(Duration::from_millis(1), IO_POLL));
        if self.read_timeout != timeout {
            if let Err(error) = self.source().set_read_timeout(timeout) {
                self.source_end = Some(SourceEnd::Failed(error));
                return;
            }
            self.read_timeout = timeout;
        }
        match self.source().read(buffer) {
            Ok(0) => self.source_end = Some(SourceEnd::Fin),
            Ok(read) => {
                self.queue.push_back(Chunk {
                    bytes: buffer[..read].to_vec(),
                    written: 0,
                    arrival: Instant::now(),
                    jitter_fraction: self.link.jitter_fraction(),
                    loss_drawn: false,
                });
                self.queued_bytes += read;
            }
            Err(error) if is_timeout(&error) || error.kind() == ErrorKind::Interrupted => {}
            Err(error) => self.source_end = Some(SourceEnd::Failed(error)),
        }
    }
}

/// What a pump does after a step.
enum Flow {
    Continue,
    Finished,
}

/// How a source stopped sending.
enum SourceEnd {
    /// An orderly close: passed on as FIN.
    Fin,
    /// A reset or another error: passed on as a reset of the whole connection.
    Failed(io::Error),
}

pub(super) fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A token bucket for one direction; refills at the current rate, holds at most [`BANDWIDTH_BURST`].
struct TokenBucket {
    bytes_per_sec: Option<u64>,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new() -> TokenBucket {
        TokenBucket { bytes_per_sec: None, tokens: 0.0, refilled: Instant::now() }
    }

    /// How many bytes may be written now, or how long until one may.
    fn available(&mut self, bytes_per_sec: Option<u64>, now: Instant) -> Result<usize, Duration> {
        if self.bytes_per_sec != bytes_per_sec {
            // A new rate starts with an empty bucket.
            *self = TokenBucket { bytes_per_sec, tokens: 0.0, refilled: now };
        }
        let Some(rate) = bytes_per_sec.filter(|&rate| rate > 0) else {
            return if bytes_per_sec == Some(0) { Err(IO_POLL) } else { Ok(usize::MAX) };
        };
        let rate = rate as f64;
        let burst = (rate * BANDWIDTH_BURST.as_secs_f64()).max(1.0);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            Ok(self.tokens as usize)
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    fn consume(&mut self, bytes: usize) {
        if self.bytes_per_sec.is_some() {
            self.tokens -= bytes as f64;
        }
    }
}

//! A TCP proxy for one directed link of a chaos cluster, with faults that can be changed at any time.
//!
//! A [`LinkProxy`] listens on one address and forwards every accepted connection to one target. Bytes
//! from the dialing node to the target flow [`Direction::Forward`]; the target's replies flow
//! [`Direction::Backward`]. Each connection is served by two threads, one per direction ("pumps").
//!
//! Guarantees:
//! - Within a direction, bytes are delivered in the order they were read, never duplicated, and never
//!   skipped: a fault that loses bytes ([`LinkFault::Cut`], [`LinkFault::Lossy`], a heal with
//!   [`OnHeal::Drop`]) resets the whole connection with a TCP RST instead, because dropping bytes from
//!   the middle of a stream would corrupt the framing above it.
//! - A fault set through [`LinkControl`] applies to open and future connections alike, within one
//!   poll interval ([`IO_POLL`]).
//! - A blocked direction passes nothing until healed: no bytes, and no end of stream either (a FIN or
//!   a reset read from its source, or the target refusing the proxy's dial, waits behind the bytes).
//!   The proxy still dials the target as soon as it accepts, so the target sees a silent connection.
//!   One leak remains: a write error toward a dead destination resets the connection at once, even if
//!   the opposite direction is blocked.
//! - Held bytes (blackhole, one-way, delay, bandwidth) are buffered up to [`BACKLOG_BYTES_MAX`] per
//!   direction and connection; past that the pump stops reading, so TCP backpressure reaches the sender.
//! - No thread blocks forever: every socket call has a timeout or is non-blocking, and
//!   [`LinkProxy::stop`] (or dropping the proxy) closes the listener, resets every connection and joins
//!   every thread. A socket error closes the connection it happened on, nothing else; proxy threads
//!   never panic on one.
//! - Randomness (delay jitter, lossy closes) comes from one seeded [`Rng`].

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mini_raft::raft::rng::Rng;

/// Most bytes one direction of one connection holds back (blackholed, delayed or rate-limited) before
/// the pump stops reading from its source.
pub const BACKLOG_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most bytes read from a socket at once; one read is one "chunk" for delay and lossy faults.
const CHUNK_BYTES_MAX: usize = 64 * 1024;
/// Longest any socket call or idle wait blocks: bounds how late a thread sees a fault change or stop.
pub const IO_POLL: Duration = Duration::from_millis(10);
/// How long the proxy waits to connect to the target before resetting the accepted connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Burst allowed by the bandwidth limiter, as time at the configured rate.
const BANDWIDTH_BURST: Duration = Duration::from_millis(20);

/// Which way bytes flow through a link's proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the node that dialed the proxy to the target.
    Forward,
    /// From the target back to the dialing node.
    Backward,
}

/// What happens to held bytes when a blackhole or one-way fault is replaced by another fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnHeal {
    /// Deliver everything held, in order, then continue: like a network that recovers before TCP
    /// gives up retransmitting.
    Deliver,
    /// Discard what was held and reset every connection that was open: like TCP timing out. Bytes
    /// cannot be dropped from a live stream without corrupting its framing, so the connection goes.
    Drop,
}

/// The fault a link applies. Replacing one fault by another is the only way to change it;
/// [`LinkFault::Pass`] is "healed".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkFault {
    /// No fault: bytes are forwarded as soon as they are read.
    Pass,
    /// Reset (RST) every open connection, and reset new ones as soon as they are accepted.
    Cut,
    /// Forward nothing in either direction; keep reading into the backlog.
    Blackhole { on_heal: OnHeal },
    /// Blackhole one direction only; the other passes.
    OneWay { blocked: Direction, on_heal: OnHeal },
    /// Deliver each chunk no earlier than its arrival + `fixed` + a uniform draw from `[0, jitter]`.
    Delay { fixed: Duration, jitter: Duration },
    /// Cap each direction of each connection at `bytes_per_sec` (token bucket).
    Bandwidth { bytes_per_sec: u64 },
    /// [`LinkFault::Delay`] and [`LinkFault::Bandwidth`] at once.
    DelayAndBandwidth { fixed: Duration, jitter: Duration, bytes_per_sec: u64 },
    /// Before forwarding each chunk, reset the connection with probability `close_per_mille` / 1000.
    Lossy { close_per_mille: u32 },
}

impl LinkFault {
    fn policy(self, direction: Direction) -> Policy {
        let mut policy = Policy::default();
        match self {
            LinkFault::Pass => {}
            LinkFault::Cut | LinkFault::Blackhole { .. } => policy.hold = true,
            LinkFault::OneWay { blocked, .. } => policy.hold = blocked == direction,
            LinkFault::Delay { fixed, jitter } => (policy.fixed, policy.jitter) = (fixed, jitter),
            LinkFault::Bandwidth { bytes_per_sec } => policy.bytes_per_sec = Some(bytes_per_sec),
            LinkFault::DelayAndBandwidth { fixed, jitter, bytes_per_sec } => {
                (policy.fixed, policy.jitter, policy.bytes_per_sec) = (fixed, jitter, Some(bytes_per_sec));
            }
            LinkFault::Lossy { close_per_mille } => policy.close_per_mille = close_per_mille,
        }
        policy
    }

    fn drops_on_heal(self) -> bool {
        matches!(self, LinkFault::Blackhole { on_heal: OnHeal::Drop } | LinkFault::OneWay { on_heal: OnHeal::Drop, .. })
    }
}

/// What one direction does with its bytes right now, derived from the link's fault.
#[derive(Clone, Copy, Debug, Default)]
struct Policy {
    hold: bool,
    fixed: Duration,
    jitter: Duration,
    bytes_per_sec: Option<u64>,
    close_per_mille: u32,
}

/// A snapshot of a link's counters, summed over all its connections since the proxy started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub bytes_forward: u64,
    pub bytes_backward: u64,
    pub connections_accepted: u64,
    /// Connections the proxy reset: by a fault, a failed dial of the target, a socket error, or stop.
    pub connections_reset: u64,
}

#[derive(Default)]
struct AtomicCounters {
    bytes_forward: AtomicU64,
    bytes_backward: AtomicU64,
    connections_accepted: AtomicU64,
    connections_reset: AtomicU64,
}

/// State shared by the proxy, its control handles and its threads.
struct Link {
    target: SocketAddr,
    state: Mutex<LinkState>,
    stopping: AtomicBool,
    rng: Mutex<Rng>,
    counters: AtomicCounters,
}

/// The fault and the open connections, under one lock so a new connection cannot miss a Cut.
struct LinkState {
    fault: LinkFault,
    conns: Vec<Weak<Conn>>,
}

/// A lock that survives a poisoned mutex: the data behind these locks stays consistent on its own.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn policy(&self, direction: Direction) -> Policy {
        lock(&self.state).fault.policy(direction)
    }

    /// Whether nothing may travel backward now, not even a reset: a blackhole, not a cut.
    fn hides_backward(&self) -> bool {
        let fault = lock(&self.state).fault;
        fault != LinkFault::Cut && fault.policy(Direction::Backward).hold
    }

    /// A uniform draw from `[0, 1)` that scales a chunk's jitter.
    fn jitter_fraction(&self) -> f64 {
        const RESOLUTION: u64 = 1 << 20;
        lock(&self.rng).range(0, RESOLUTION) as f64 / RESOLUTION as f64
    }

    fn lossy_close(&self, close_per_mille: u32) -> bool {
        close_per_mille > 0 && lock(&self.rng).chance(u64::from(close_per_mille), 1000)
    }

    fn count_bytes(&self, direction: Direction, bytes: usize) {
        let counter = match direction {
            Direction::Forward => &self.counters.bytes_forward,
            Direction::Backward => &self.counters.bytes_backward,
        };
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn reset_all(&self, state: &mut LinkState) {
        for conn in state.conns.iter().filter_map(Weak::upgrade) {
            conn.reset(self);
        }
        state.conns.retain(|conn| conn.strong_count() > 0);
    }
}

/// A cloneable, thread-safe handle that sets a link's fault and reads its counters.
#[derive(Clone)]
pub struct LinkControl {
    link: Arc<Link>,
}

impl LinkControl {
    /// Replaces the link's fault. Setting [`LinkFault::Cut`] resets every open connection; replacing
    /// a fault whose `on_heal` is [`OnHeal::Drop`] by any other fault resets them too.
    pub fn set_fault(&self, fault: LinkFault) {
        let mut state = lock(&self.link.state);
        let old = std::mem::replace(&mut state.fault, fault);
        if fault == LinkFault::Cut || (old.drops_on_heal() && old != fault) {
            self.link.reset_all(&mut state);
        }
    }

    /// Same as `set_fault(LinkFault::Pass)`.
    pub fn heal(&self) {
        self.set_fault(LinkFault::Pass);
    }

    pub fn fault(&self) -> LinkFault {
        lock(&self.link.state).fault
    }

    pub fn counters(&self) -> LinkCounters {
        let counters = &self.link.counters;
        LinkCounters {
            bytes_forward: counters.bytes_forward.load(Ordering::Relaxed),
            bytes_backward: counters.bytes_backward.load(Ordering::Relaxed),
            connections_accepted: counters.connections_accepted.load(Ordering::Relaxed),
            connections_reset: counters.connections_reset.load(Ordering::Relaxed),
        }
    }
}

/// A running proxy for one directed link. Stops (and joins its threads) on [`LinkProxy::stop`] or drop.
pub struct LinkProxy {
    control: LinkControl,
    local_addr: SocketAddr,
    accept_thread: Option<JoinHandle<()>>,
}

impl LinkProxy {
    /// Listens on `listen` (port 0 picks a free port) and forwards every connection to `target`.
    /// `seed` seeds the link's randomness. The link starts with [`LinkFault::Pass`].
    pub fn start(listen: SocketAddr, target: SocketAddr, seed: u64) -> io::Result<LinkProxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let link = Arc::new(Link {
            target,
            state: Mutex::new(LinkState { fault: LinkFault::Pass, conns: Vec::new() }),
            stopping: AtomicBool::new(false),
            rng: Mutex::new(Rng::new(seed)),
            counters: AtomicCounters::default(),
        });
        let accept_link = Arc::clone(&link);
        let accept_thread = thread::Builder::new()
            .name(format!("proxy {local_addr}"))
            .spawn(move || accept_loop(&accept_link, &listener))?;
        Ok(LinkProxy { control: LinkControl { link }, local_addr, accept_thread: Some(accept_thread) })
    }

    /// The address nodes dial to reach the target through this link.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn target(&self) -> SocketAddr {
        self.control.link.target
    }

    /// A handle for other threads.
    pub fn control(&self) -> LinkControl {
        self.control.clone()
    }

    pub fn set_fault(&self, fault: LinkFault) {
        self.control.set_fault(fault);
    }

    pub fn heal(&self) {
        self.control.heal();
    }

    pub fn counters(&self) -> LinkCounters {
        self.control.counters()
    }

    /// Closes the listener, resets every connection and joins every thread. Idempotent.
    pub fn stop(&mut self) {
        let link = &self.control.link;
        link.stopping.store(true, Ordering::SeqCst);
        link.reset_all(&mut lock(&link.state));
        if let Some(thread) = self.accept_thread.take() {
            if thread.join().is_err() {
                warn!("proxy {}: the accept thread panicked", self.local_addr);
            }
        }
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts connections until the link stops, then joins every connection thread.
fn accept_loop(link: &Arc<Link>, listener: &TcpListener) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !link.stopping() {
        match listener.accept() {
            Ok((stream, peer)) => {
                link.counters.connections_accepted.fetch_add(1, Ordering::Relaxed);
                if lock(&link.state).fault == LinkFault::Cut {
                    reset_stream(link, stream);
                    continue;
                }
                let conn_link = Arc::clone(link);
                let spawned = thread::Builder::new()
                    .name(format!("proxy conn {peer}"))
                    .spawn(move || serve_connection(&conn_link, stream));
                match spawned {
                    Ok(handle) => connections.push(handle),
                    // The closure, and with it the stream, is dropped: the dialer sees the close.
                    Err(error) => warn!("proxy: cannot start a thread for {peer}: {error}"),
                }
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => thread::sleep(IO_POLL),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                // E.g. out of file descriptors: keep listening, it may pass.
                warn!("proxy: accept failed: {error}");
                thread::sleep(IO_POLL);
            }
        }
        connections.retain(|handle| !handle.is_finished());
    }
    for handle in connections {
        if handle.join().is_err() {
            warn!("proxy: a connection thread panicked");
        }
    }
}

/// One proxied connection: both sockets, owned here so the last pump to finish closes them.
struct Conn {
    dialer: TcpStream,
    target: TcpStream,
    reset: AtomicBool,
}

impl Conn {
    /// Marks the connection for reset and arms SO_LINGER {on, 0} on both sockets, so the close that
    /// follows (when both pumps notice the flag and drop their handles) sends RST instead of FIN.
    fn reset(&self, link: &Link) {
        if self.reset.swap(true, Ordering::SeqCst) {
            return;
        }
        for stream in [&self.dialer, &self.target] {
            if let Err(error) = set_linger_zero(stream) {
                debug!("proxy: cannot arm a reset, the connection closes with FIN: {error}");
            }
        }
        link.counters.connections_reset.fetch_add(1, Ordering::Relaxed);
    }

    fn is_reset(&self) -> bool {
        self.reset.load(Ordering::SeqCst)
    }

    /// (source, destination) of a direction.
    fn streams(&self, direction: Direction) -> (&TcpStream, &TcpStream) {
        match direction {
            Direction::Forward => (&self.dialer, &self.target),
            Direction::Backward => (&self.target, &self.dialer),
        }
    }
}

/// Resets a connection that never got a [`Conn`] (refused during a Cut, or the target is down).
fn reset_stream(link: &Link, stream: TcpStream) {
    if let Err(error) = set_linger_zero(&stream) {
        debug!("proxy: cannot arm a reset, the connection closes with FIN: {error}");
    }
    link.counters.connections_reset.fetch_add(1, Ordering::Relaxed);
    drop(stream);
}

/// Dials the target, then pumps the forward direction on this thread and the backward on another.
fn serve_connection(link: &Arc<Link>, dialer: TcpStream) {
    let target = match TcpStream::connect_timeout(&link.target, CONNECT_TIMEOUT) {
        Ok(target) => target,
        Err(error) => {
            debug!("proxy: cannot reach {}: {error}", link.target);
            // The refusal travels backward: a blackhole hides it until healed.
            while link.hides_backward() && !link.stopping() {
                thread::sleep(IO_POLL);
            }
            reset_stream(link, dialer);
            return;
        }
    };
    let conn = Arc::new(Conn { dialer, target, reset: AtomicBool::new(false) });
    if let Err(error) = configure(&conn.dialer).and_then(|()| configure(&conn.target)) {
        debug!("proxy: cannot configure a connection to {}: {error}", link.target);
        conn.reset(link);
        return;
    }
    {
        let mut state = lock(&link.state);
        if state.fault == LinkFault::Cut || link.stopping() {
            conn.reset(link);
        }
        state.conns.retain(|conn| conn.strong_count() > 0);
        state.conns.push(Arc::downgrade(&conn));
    }
    let (backward_link, backward_conn) = (Arc::clone(link), Arc::clone(&conn));
    let backward = thread::Builder::new()
        .name(format!("proxy pump <- {}", link.target))
        .spawn(move || Pump::new(&backward_link, &backward_conn, Direction::Backward).run());
    let backward = match backward {
        Ok(handle) => handle,
        Err(error) => {
            warn!("proxy: cannot start a pump thread: {error}");
            conn.reset(link);
            return;
        }
    };
    Pump::new(link, &conn, Direction::Forward).run();
    if backward.join().is_err() {
        warn!("proxy: a pump thread panicked");
    }
}

fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(IO_POLL))
}

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
struct Pump<'a> {
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
    fn new(link: &'a Link, conn: &'a Conn, direction: Direction) -> Pump<'a> {
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

    fn run(mut self) {
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

fn is_timeout(error: &io::Error) -> bool {
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

/// Arms SO_LINGER {on, 0 s}: closing the socket then sends RST and discards unsent data, which is
/// how the proxy imitates a connection reset. std has no stable setter, so this declares libc's
/// `setsockopt` (std already links libc) with the Linux constants.
#[cfg(target_os = "linux")]
fn set_linger_zero(stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::raw::{c_int, c_void};

    const SOL_SOCKET: c_int = 1;
    const SO_LINGER: c_int = 13;
    #[repr(C)]
    struct Linger {
        l_onoff: c_int,
        l_linger: c_int,
    }
    extern "C" {
        fn setsockopt(socket: c_int, level: c_int, name: c_int, value: *const c_void, length: u32) -> c_int;
    }
    let linger = Linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: the fd is open for as long as `stream` is borrowed; `value` points to a live, properly
    // laid out `struct linger` of exactly `length` bytes, which setsockopt only reads.
    let status = unsafe {
        setsockopt(
            stream.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            (&linger as *const Linger).cast::<c_void>(),
            std::mem::size_of::<Linger>() as u32,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere a "reset" is a plain close (FIN).
#[cfg(not(target_os = "linux"))]
fn set_linger_zero(_stream: &TcpStream) -> io::Result<()> {
    Err(io::Error::new(ErrorKind::Unsupported, "SO_LINGER is only set on Linux"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Longest any test waits for a condition; far above what a healthy run needs.
    const DEADLINE: Duration = Duration::from_secs(10);
    /// How long a test watches for bytes that must not arrive.
    const QUIET: Duration = Duration::from_millis(200);
    const GREETING: &[u8] = b"hi";

    fn any_local_port() -> SocketAddr {
        (Ipv4Addr::LOCALHOST, 0).into()
    }

    /// Echoes every connection; first sends `greeting` (so the backward direction carries bytes the
    /// dialer did not ask for) and counts every byte received.
    struct EchoServer {
        addr: SocketAddr,
        received: Arc<AtomicU64>,
        stopping: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl EchoServer {
        fn start(greeting: &'static [u8]) -> EchoServer {
            let listener = TcpListener::bind(any_local_port()).unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let received = Arc::new(AtomicU64::new(0));
            let stopping = Arc::new(AtomicBool::new(false));
            let (thread_received, thread_stopping) = (Arc::clone(&received), Arc::clone(&stopping));
            let thread = thread::spawn(move || {
                let mut connections = Vec::new();
                while !thread_stopping.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (received, stopping) = (Arc::clone(&thread_received), Arc::clone(&thread_stopping));
                            connections.push(thread::spawn(move || echo(stream, greeting, &received, &stopping)));
                        }
                        Err(_) => thread::sleep(IO_POLL),
                    }
                }
                connections.into_iter().for_each(|handle| handle.join().unwrap());
            });
            EchoServer { addr, received, stopping, thread: Some(thread) }
        }

        fn received(&self) -> u64 {
            self.received.load(Ordering::SeqCst)
        }
    }

    fn echo(mut stream: TcpStream, greeting: &[u8], received: &AtomicU64, stopping: &AtomicBool) {
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(IO_POLL)).unwrap();
        if stream.write_all(greeting).is_err() {
            return;
        }
        let mut buffer = vec![0u8; 64 * 1024];
        while !stopping.load(Ordering::SeqCst) {
            match stream.read(&mut buffer) {
                Ok(0) => return,
                Ok(read) => {
                    received.fetch_add(read as u64, Ordering::SeqCst);
                    if stream.write_all(&buffer[..read]).is_err() {
                        return;
                    }
                }
                Err(error) if is_timeout(&error) => {}
                Err(_) => return,
            }
        }
    }

    impl Drop for EchoServer {
        fn drop(&mut self) {
            self.stopping.store(true, Ordering::SeqCst);
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
        }
    }

    fn setup(greeting: &'static [u8], fault: LinkFault) -> (EchoServer, LinkProxy) {
        let server = EchoServer::start(greeting);
        let proxy = LinkProxy::start(any_local_port(), server.addr, 42).unwrap();
        proxy.set_fault(fault);
        (server, proxy)
    }

    fn connect(proxy: &LinkProxy) -> TcpStream {
        let stream = TcpStream::connect(proxy.local_addr()).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_write_timeout(Some(DEADLINE)).unwrap();
        stream
    }

    fn read_exactly(stream: &mut TcpStream, length: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; length];
        stream.read_exact(&mut bytes).unwrap();
        bytes
    }

    /// What the next read returns, waiting at most [`DEADLINE`].
    fn next_read(stream: &mut TcpStream) -> io::Result<usize> {
        stream.read(&mut [0u8; 1024])
    }

    fn assert_reset(stream: &mut TcpStream) {
        let outcome = next_read(stream);
        assert!(
            matches!(&outcome, Err(error) if error.kind() == ErrorKind::ConnectionReset),
            "expected ConnectionReset, got {outcome:?}"
        );
    }

    fn assert_nothing_arrives(stream: &mut TcpStream) {
        stream.set_read_timeout(Some(QUIET)).unwrap();
        let outcome = next_read(stream);
        assert!(matches!(&outcome, Err(error) if is_timeout(error)), "expected silence, got {outcome:?}");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
    }

    fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// An address nothing listens on (a port just released).
    fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind(any_local_port()).unwrap();
        listener.local_addr().unwrap()
    }

    fn pattern(length: usize) -> Vec<u8> {
        (0..length).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn pass_forwards_both_ways_and_counts() {
        let (server, proxy) = setup(GREETING, LinkFault::Pass);
        let mut client = connect(&proxy);
        assert_eq!(read_exactly(&mut client, GREETING.len()), GREETING);
        let data = pattern(300_000);
        let writer = {
            let mut client = client.try_clone().unwrap();
            let data = data.clone();
            thread::spawn(move || client.write_all(&data).unwrap())
        };
        assert_eq!(read_exactly(&mut client, data.len()), data);
        writer.join().unwrap();
        assert_eq!(server.received(), data.len() as u64);
        // A pump counts its bytes just after the write that delivered them.
        let backward = (GREETING.len() + data.len()) as u64;
        let forward = data.len() as u64;
        wait_until("the counters caught up", || {
            let counters = proxy.counters();
            (counters.bytes_forward, counters.bytes_backward) == (forward, backward)
        });
        let counters = proxy.counters();
        assert_eq!((counters.connections_accepted, counters.connections_reset), (1, 0));
    }

    #[test]
    fn fin_from_the_dialer_reaches_the_target_and_back() {
        let (_server, proxy) = setup(GREETING, LinkFault::Pass);
        let mut client = connect(&proxy);
        client.write_all(b"bye").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"hibye");
        assert_eq!(proxy.counters().connections_reset, 0);
    }

    #[test]
    fn cut_resets_open_connections_with_rst() {
        let (_server, proxy) = setup(GREETING, LinkFault::Pass);
        let mut client = connect(&proxy);
        assert_eq!(read_exactly(&mut client, GREETING.len()), GREETING);
        proxy.set_fault(LinkFault::Cut);
        assert_reset(&mut client);
        assert_eq!(proxy.counters().connections_reset, 1);
    }

    #[test]
    fn cut_resets_new_connections_until_healed() {
        let (_server, proxy) = setup(GREETING, LinkFault::Cut);
        let mut refused = connect(&proxy);
        assert_reset(&mut refused);
        proxy.heal();
        let mut client = connect(&proxy);
        assert_eq!(read_exactly(&mut client, GREETING.len()), GREETING);
        let counters = proxy.counters();
        assert_eq!((counters.connections_accepted, counters.connections_reset), (2, 1));
    }

    #[test]
    fn blackhole_then_deliver_delivers_everything_in_order() {
        let (server, proxy) = setup(GREETING, LinkFault::Blackhole { on_heal: OnHeal::Deliver });
        let mut client = connect(&proxy);
        let data = pattern(1 << 20);
        // The proxy keeps reading into its backlog, so the whole write completes while held.
        client.write_all(&data).unwrap();
        assert_nothing_arrives(&mut client);
        assert_eq!(server.received(), 0);
        assert_eq!(proxy.counters().bytes_forward, 0);
        proxy.heal();
        assert_eq!(read_exactly(&mut client, GREETING.len()), GREETING);
        assert_eq!(read_exactly(&mut client, data.len()), data);
        assert_eq!(proxy.counters().connections_reset, 0);
    }

    #[test]
    fn blackhole_holds_the_fin_until_healed() {
        let (_server, proxy) = setup(GREETING, LinkFault::Blackhole { on_heal: OnHeal::Deliver });
        let mut client = connect(&proxy);
        client.write_all(b"bye").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        assert_nothing_arrives(&mut client);
        proxy.heal();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"hibye");
    }

    #[test]
    fn blackhole_hides_an_unreachable_target_until_healed() {
        let proxy = LinkProxy::start(any_local_port(), closed_port(), 1).unwrap();
        proxy.set_fault(LinkFault::Blackhole { on_heal: OnHeal::Deliver });
        let mut client = connect(&proxy);
        assert_nothing_arrives(&mut client);
        proxy.heal();
        assert_reset(&mut client);
    }

    #[test]
    fn blackhole_then_drop_resets_the_connection() {
        let (server, proxy) = setup(GREETING, LinkFault::Blackhole { on_heal: OnHeal::Drop });
        let mut client = connect(&proxy);
        client.write_all(b"lost").unwrap();
        assert_nothing_arrives(&mut client);
        proxy.heal();
        assert_reset(&mut client);
        assert_eq!(server.received(), 0);
        assert_eq!(proxy.counters().connections_reset, 1);
    }

    #[test]
    fn blackhole_backlog_is_bounded_and_backpressures_the_sender() {
        let (_server, proxy) = setup(GREETING, LinkFault::Blackhole { on_heal: OnHeal::Deliver });
        let mut client = connect(&proxy);
        client.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
        let block = vec![7u8; 1 << 20];
        let (mut written, mut stalls) = (0usize, 0);
        let deadline = Instant::now() + 3 * DEADLINE;
        // Three write timeouts in a row without progress: the sender is blocked.
        while stalls < 3 {
            assert!(Instant::now() < deadline, "the sender never blocked ({written} bytes written)");
            match client.write(&block) {
                Ok(count) => (written, stalls) = (written + count, 0),
                Err(error) if is_timeout(&error) => stalls += 1,
                Err(error) => panic!("write failed: {error}"),
            }
        }
        // What the proxy holds plus what the kernel buffers on both sockets.
        let kernel_buffers_max = 32 << 20;
        assert!(written >= BACKLOG_BYTES_MAX, "blocked after only {written} bytes");
        assert!(written <= BACKLOG_BYTES_MAX + kernel_buffers_max, "{written} bytes accepted");
        assert_eq!(proxy.counters().bytes_forward, 0);
    }

    #[test]
    fn oneway_forward_blocks_only_the_forward_direction() {
        let blocked = LinkFault::OneWay { blocked: Direction::Forward, on_heal: OnHeal::Deliver };
        let (server, proxy) = setup(GREETING, blocked);
        let mut client = connect(&proxy);
        assert_eq!(read_exactly(&mut client, GREETING.len()), GREETING);
        client.write_all(b"ping").unwrap();
        assert_nothing_arrives(&mut client);
        assert_eq!(server.received(), 0);
        proxy.heal();
        assert_eq!(read_exactly(&mut client, 4), b"ping");
    }

    #[test]
    fn oneway_backward_blocks_only_the_backward_direction() {
        let blocked = LinkFault::OneWay { blocked: Direction::Backward, on_heal: OnHeal::Deliver };
        let (server, proxy) = setup(GREETING, blocked);
        let mut client = connect(&proxy);
        client.write_all(b"ping").unwrap();
        wait_until("the server received the ping", || server.received() == 4);
        assert_nothing_arrives(&mut client);
        proxy.heal();
        assert_eq!(read_exactly(&mut client, GREETING.len() + 4), b"hiping");
    }

    #[test]
    fn oneway_with_drop_resets_on_heal() {
        let blocked = LinkFault::OneWay { blocked: Direction::Forward, on_heal: OnHeal::Drop };
        let (_server, proxy) = setup(GREETING, blocked);
        let mut client = connect(&proxy);
        assert_eq!(read_exactly(&mut client, GREETING.len()), GREETING);
        client.write_all(b"lost").unwrap();
        proxy.heal();
        assert_reset(&mut client);
    }

    #[test]
    fn delay_adds_at_least_the_fixed_delay_and_keeps_order() {
        let fixed = Duration::from_millis(200);
        let (_server, proxy) = setup(b"", LinkFault::Delay { fixed, jitter: Duration::from_millis(50) });
        let mut client = connect(&proxy);
        let sent = Instant::now();
        let messages = 50u32;
        for i in 0..messages {
            client.write_all(&i.to_be_bytes()).unwrap();
        }
        let mut first = [0u8; 4];
        client.read_exact(&mut first).unwrap();
        // Through the proxy and back: the delay applies once in each direction.
        assert!(sent.elapsed() >= 2 * fixed, "round trip took only {:?}", sent.elapsed());
        let rest = read_exactly(&mut client, 4 * (messages as usize - 1));
        let echoed: Vec<u32> = std::iter::once(&first[..])
            .chain(rest.chunks(4))
            .map(|bytes| u32::from_be_bytes(bytes.try_into().unwrap()))
            .collect();
        assert_eq!(echoed, (0..messages).collect::<Vec<_>>());
    }

    #[test]
    fn healing_a_delay_releases_queued_bytes_at_once() {
        let fixed = Duration::from_secs(60);
        let (_server, proxy) = setup(GREETING, LinkFault::Delay { fixed, jitter: Duration::ZERO });
        let mut client = connect(&proxy);
        assert_nothing_arrives(&mut client);
        proxy.heal();
        assert_eq!(read_exactly(&mut client, GREETING.len()), GREETING);
    }

    #[test]
    fn bandwidth_caps_throughput() {
        let bytes_per_sec = 256 * 1024;
        let (_server, proxy) = setup(b"", LinkFault::Bandwidth { bytes_per_sec });
        let mut client = connect(&proxy);
        let data = pattern(bytes_per_sec as usize);
        let started = Instant::now();
        let writer = {
            let mut client = client.try_clone().unwrap();
            let data = data.clone();
            thread::spawn(move || client.write_all(&data).unwrap())
        };
        assert_eq!(read_exactly(&mut client, data.len()), data);
        writer.join().unwrap();
        // One second's worth at the cap, minus the burst allowance.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(900), "{} bytes took only {elapsed:?}", data.len());
        assert!(elapsed < DEADLINE, "{} bytes took {elapsed:?}", data.len());
    }

    #[test]
    fn delay_and_bandwidth_combine() {
        let fault = LinkFault::DelayAndBandwidth {
            fixed: Duration::from_millis(100),
            jitter: Duration::ZERO,
            bytes_per_sec: 100 * 1024,
        };
        let (_server, proxy) = setup(b"", fault);
        let mut client = connect(&proxy);
        let data = pattern(50 * 1024);
        let started = Instant::now();
        client.write_all(&data).unwrap();
        assert_eq!(read_exactly(&mut client, data.len()), data);
        assert!(started.elapsed() >= Duration::from_millis(600), "took only {:?}", started.elapsed());
    }

    #[test]
    fn lossy_at_1000_per_mille_closes_on_the_first_chunk() {
        let (server, proxy) = setup(b"", LinkFault::Lossy { close_per_mille: 1000 });
        let mut client = connect(&proxy);
        client.write_all(b"x").unwrap();
        assert_reset(&mut client);
        assert_eq!(server.received(), 0);
        assert_eq!(proxy.counters().connections_reset, 1);
        assert_eq!(proxy.counters().bytes_forward, 0);
    }

    #[test]
    fn lossy_at_0_per_mille_never_closes() {
        let (_server, proxy) = setup(b"", LinkFault::Lossy { close_per_mille: 0 });
        let mut client = connect(&proxy);
        for i in 0..200u32 {
            client.write_all(&i.to_be_bytes()).unwrap();
            assert_eq!(read_exactly(&mut client, 4), i.to_be_bytes());
        }
        assert_eq!(proxy.counters().connections_reset, 0);
    }

    #[test]
    fn unreachable_target_resets_the_dialer() {
        let proxy = LinkProxy::start(any_local_port(), closed_port(), 1).unwrap();
        let mut client = connect(&proxy);
        assert_reset(&mut client);
        assert_eq!(proxy.counters().connections_reset, 1);
    }

    #[test]
    fn stop_resets_connections_closes_the_listener_and_joins() {
        let (_server, mut proxy) = setup(GREETING, LinkFault::Blackhole { on_heal: OnHeal::Deliver });
        let mut client = connect(&proxy);
        client.write_all(b"held").unwrap();
        let started = Instant::now();
        proxy.stop();
        assert!(started.elapsed() < DEADLINE);
        assert_reset(&mut client);
        let refused = TcpStream::connect(proxy.local_addr());
        assert!(refused.is_err(), "the listener is still open");
        proxy.stop();
    }
}

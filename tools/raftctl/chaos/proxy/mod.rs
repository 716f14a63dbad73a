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

//!
//! Rooms: this file (the fault model, the shared link state, the control handle, accepting and
//! dialing), `pump` (moving one direction of one connection under the current fault), `linger`
//! (the RST on reset).

mod linger;
mod pump;

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use linger::set_linger_zero;
use log::{debug, warn};
use mini_raft::raft::rng::Rng;
use pump::Pump;

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

    #[cfg(test)]
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

#[cfg(test)]
mod tests;

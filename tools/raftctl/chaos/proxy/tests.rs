//! Tests of the link proxy against a local echo server.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown};
use std::time::Instant;

use super::pump::is_timeout;
use super::*;

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

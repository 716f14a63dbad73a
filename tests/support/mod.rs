//! Test harness for process-level tests: real `raftd` processes on loopback ports, killed with
//! SIGKILL and restarted on the same data directories. Waits are on conditions with deadlines,
//! never fixed sleeps, so the tests hold up on a busy 2-core machine.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mini_raft::client::{frames, Client, ClientOptions};
use mini_raft::wire::{
    ClientReply, ClientRequest, Frame, FrameBody, FrameDecoder, Hello, NodeRole, Role, StatusReport, PROTOCOL_VERSION,
};

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<String>,
    /// Each node's `--http-listen` address ([`TestCluster::start_http`]); empty otherwise.
    pub http_addrs: Vec<String>,
    procs: Vec<Option<Child>>,
    extra_args: Vec<String>,
    /// The first `bootstrap` nodes form the cluster (`--peers`); later ones join (`--join`).
    bootstrap: usize,
}

/// Ports below the kernel's ephemeral range (32768+ by default), so that no client socket can
/// take one between the check and the node's bind; handed out once per test process.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
const PORT_BASE: u32 = 20_000;
const PORT_SPAN: u32 = 12_000;

/// Ports that are free right now, distinct across the tests of this process.
fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::Ordering;
    // Start where the process id points, so that concurrent test binaries rarely overlap.
    let _ = NEXT_PORT.compare_exchange(
        0,
        std::process::id().wrapping_mul(7919) % PORT_SPAN + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let mut ports = Vec::with_capacity(n);
    let mut held = Vec::with_capacity(n);
    for _ in 0..PORT_SPAN {
        if ports.len() == n {
            break;
        }
        let port = (PORT_BASE + NEXT_PORT.fetch_add(1, Ordering::SeqCst) % PORT_SPAN) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            ports.push(port);
            held.push(listener); // held until all are found, so none is handed out twice
        }
    }
    assert_eq!(ports.len(), n, "no free ports in {PORT_BASE}..{}", PORT_BASE + PORT_SPAN);
    ports
}

pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

impl TestCluster {
    pub fn start(n: usize, extra_args: &[&str]) -> TestCluster {
        TestCluster::start_with(n, extra_args, false)
    }

    /// Like [`TestCluster::start`], each node also serving HTTP (`--http-listen`).
    pub fn start_http(n: usize, extra_args: &[&str]) -> TestCluster {
        TestCluster::start_with(n, extra_args, true)
    }

    fn start_with(n: usize, extra_args: &[&str], http: bool) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(if http { 2 * n } else { n });
        let addrs = ports[..n].iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let http_addrs = ports[n..].iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut cluster = TestCluster {
            dir,
            addrs,
            http_addrs,
            procs: (0..n).map(|_| None).collect(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            bootstrap: n,
        };
        for id in 1..=n {
            cluster.start_node(id);
        }
        cluster
    }

    pub fn node_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn log_path(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    /// A new node on a new port and an empty data directory, started with `raftd --join`: it
    /// waits to be added. Returns its id.
    pub fn add_joining_node(&mut self) -> usize {
        let port = free_ports(1)[0];
        self.addrs.push(format!("127.0.0.1:{port}"));
        self.procs.push(None);
        let id = self.addrs.len();
        self.start_node(id);
        id
    }

    pub fn start_node(&mut self, id: usize) {
        assert!(self.procs[id - 1].is_none(), "node {id} is already running");
        let peers: Vec<String> =
            self.addrs.iter().take(self.bootstrap).enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let join = id > self.bootstrap;
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.stderr")))
            .expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_raftd"))
            .args(["--id", &id.to_string(), "--listen", &self.addrs[id - 1], "--peers", &peers.join(",")])
            .arg("--data-dir")
            .arg(self.node_dir(id))
            .arg("--log-file")
            .arg(self.log_path(id))
            .args(["--segment-mib", "4"])
            .args(join.then_some("--join"))
            .args(self.http_addrs.get(id - 1).map(|http| ["--http-listen", http.as_str()]).into_iter().flatten())
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn raftd");
        self.procs[id - 1] = Some(child);
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.procs[id - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (at most `deadline`) for the process to exit; its exit code, or
    /// `None` if it did not exit in time (it is then killed).
    pub fn terminate(&mut self, id: usize, deadline: Duration) -> Option<i32> {
        let mut child = self.procs[id - 1].take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn is_running(&self, id: usize) -> bool {
        self.procs[id - 1].is_some()
    }

    pub fn client(&self) -> Client {
        let options = ClientOptions { deadline: Duration::from_secs(15), ..ClientOptions::default() };
        Client::new(self.addrs.clone(), options).expect("client")
    }

    /// The status of one node, or None if it does not answer quickly.
    pub fn status(&self, id: usize) -> Option<StatusReport> {
        let mut conn = RawConn::connect(&self.addrs[id - 1])?;
        match conn.request(ClientRequest::Status)? {
            FrameBody::Reply(ClientReply::Status(report)) => Some(report),
            _ => None,
        }
    }

    /// Waits until some running node reports being leader; returns (id, term).
    pub fn wait_leader(&self, deadline: Duration) -> Option<(usize, u64)> {
        let mut found = None;
        wait_until(deadline, || {
            found = (1..=self.addrs.len())
                .filter(|&id| self.is_running(id))
                .filter_map(|id| self.status(id).map(|s| (id, s)))
                .filter(|(_, s)| s.role == NodeRole::Leader)
                .map(|(id, s)| (id, s.term))
                .max_by_key(|&(_, term)| term);
            found.is_some()
        });
        found
    }

    pub fn dump_logs(&self) -> String {
        let mut out = String::new();
        for id in 1..=self.addrs.len() {
            let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- node {id} log tail ---\n"));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for id in 1..=self.procs.len() {
            self.kill(id);
        }
    }
}

/// A raw protocol connection for tests that need exact frames (or bad ones).
pub struct RawConn {
    pub stream: TcpStream,
    decoder: FrameDecoder,
    next_request_id: u64,
}

impl RawConn {
    /// Connects and completes the client handshake.
    pub fn connect(addr: &str) -> Option<RawConn> {
        let mut conn = RawConn::open(addr)?;
        let hello = Hello { role: Role::Client, cluster_id: 1, node_id: 0, protocol_version: PROTOCOL_VERSION };
        conn.send(&Frame::new(0, FrameBody::Hello(hello)));
        match conn.recv()?.body {
            FrameBody::HelloOk(_) => Some(conn),
            _ => None,
        }
    }

    /// Connects without a handshake.
    pub fn open(addr: &str) -> Option<RawConn> {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.set_nodelay(true).ok()?;
        Some(RawConn { stream, decoder: FrameDecoder::new(), next_request_id: 1 })
    }

    pub fn send(&mut self, frame: &Frame) {
        let _ = frames::write_frame(&mut self.stream, frame);
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// The next frame, or None on EOF, timeout or an undecodable reply.
    pub fn recv(&mut self) -> Option<Frame> {
        frames::read_frame(&mut self.stream, &mut self.decoder)
    }

    /// Opens a session (`RegisterClient`) and returns its id.
    pub fn register(&mut self) -> Option<u64> {
        match self.request(ClientRequest::RegisterClient)? {
            FrameBody::Reply(ClientReply::Registered { session_id }) => Some(session_id),
            _ => None,
        }
    }

    pub fn request(&mut self, request: ClientRequest) -> Option<FrameBody> {
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.send(&Frame::new(id, FrameBody::Request(request)));
        let frame = self.recv()?;
        (frame.request_id == id).then_some(frame.body)
    }

    /// True if the server closed the connection (EOF) within the read timeout.
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        }
    }
}

pub fn value(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

/// One HTTP response as a test sees it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines, lower-cased names: `("content-type", "text/plain")`.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `request` (raw bytes) on a new connection and reads one response (`None` if the
/// connection fails or closes first).
pub fn http_raw(addr: &str, request: &[u8]) -> Option<HttpResponse> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(request).ok()?;
    read_http_response(&mut stream)
}

/// `GET path` on a new connection that closes after the response.
pub fn http_get(addr: &str, path: &str) -> Option<HttpResponse> {
    http_raw(addr, format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())
}

/// Reads one response (head, then `Content-Length` bytes of body) from `stream`.
pub fn read_http_response(stream: &mut TcpStream) -> Option<HttpResponse> {
    read_http_response_after(stream, &mut Vec::new())
}

/// Like [`read_http_response`] for pipelined responses: `data` holds bytes read past the previous
/// response, and keeps those past this one.
pub fn read_http_response_after(stream: &mut TcpStream, data: &mut Vec<u8>) -> Option<HttpResponse> {
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = headers.iter().find(|(n, _)| n == "content-length")?.1.parse().ok()?;
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&data[head_end..head_end + length]).to_string();
    data.drain(..head_end + length);
    Some(HttpResponse { status, headers, body })
}

/// The samples of a Prometheus text page: (series name with labels, value).
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the sample named exactly `series` (labels included, as rendered).
pub fn metric(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(name, _)| name == series).map(|&(_, value)| value)
}

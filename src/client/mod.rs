//! A blocking client for a mini-raft cluster, over `std::net` sockets.
//!
//! [`Client`] keeps one connection to its current target node and speaks the wire protocol of
//! `protocol.md`: the `Hello` handshake (role client, node id 0), then one request at a time.
//!
//! Guarantees:
//! - Writes carry a session (section 7.1): a random non-zero client id and `seq` = 1, 2, 3, ... A
//!   write is retried with the **same** client id and seq until a definite answer arrives, so a
//!   retry never applies a write twice. `seq` moves on only after a definite answer. After a write
//!   that failed with an unknown outcome the client starts a fresh session (new client id, seq 1),
//!   so a later, different write can never be mistaken for the retried one.
//! - Every call ends by its deadline ([`ClientOptions::deadline`]); until then the client follows
//!   `NotLeader` redirects and retries with exponential backoff and jitter on timeouts, connection
//!   errors, `Overloaded`, `OutcomeUnknown`, `ShuttingDown` and an unknown leader, cycling through
//!   the cluster's addresses. The final error names every node and what it said last.
//! - Nothing the network sends can make the client panic.
//! - Each successful call reports which node answered ([`Answered`]).

mod conn;
mod error;
pub mod frames;

#[cfg(test)]
mod tests;

use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::kv::{Command, Session, FIRST_SEQ, KEY_BYTES_MAX};
use crate::raft::rng::Rng;
use crate::wire::{ClientReply, ClientRequest, ErrorCode, ReadConsistency, StatusReport};
use conn::Connection;
use error::{AttemptLog, Failure};
pub use error::{ClientError, NodeReport};

/// First backoff after a failed attempt; it doubles per consecutive failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest backoff: about one election timeout, so a new leader is found soon after it exists.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Longest key shown in error messages, in characters.
const KEY_DISPLAY_CHARS_MAX: usize = 48;

/// How a [`Client`] talks to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The cluster id sent in `Hello`; a node of another cluster refuses the connection.
    pub cluster_id: u64,
    /// Total time one call may take, retries included.
    pub deadline: Duration,
    /// Longest wait for one TCP connect (capped by what is left of the deadline).
    pub connect_timeout: Duration,
    /// Longest wait for one reply (capped by what is left of the deadline).
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            cluster_id: 1,
            deadline: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// A successful answer and the node that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered<T> {
    pub value: T,
    /// The address the client connected to, as given in the cluster list or a redirect.
    pub addr: String,
    /// The node id from the node's `HelloOk`.
    pub node_id: u64,
}

/// A compare-and-swap found `current` instead of the expected value (`None`: the key is absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasFailed {
    pub current: Option<Bytes>,
}

/// What the retry loop does after a failed attempt.
enum Next {
    /// Go to this address (a `NotLeader` redirect).
    Redirect(String),
    /// Back off, then try the same node again (it is busy, or its write's fate is still open).
    Same,
    /// Back off, then try the next address of the cluster.
    Other,
    /// This node belongs to another cluster: never try it again during this call.
    Exclude,
    /// Give up now: retrying cannot help.
    Fail(ClientError),
}

/// A blocking client with one session. Not `Sync`: one thread per client (each has its own session).
pub struct Client {
    cluster: Vec<String>,
    options: ClientOptions,
    connection: Option<Connection>,
    /// Index in `cluster` of the address tried when there is no connection.
    cursor: usize,
    session: Session,
    rng: Rng,
}

impl Client {
    /// A client for the nodes at `cluster` (`host:port` each). Opens no connection yet.
    pub fn new(cluster: Vec<String>, options: ClientOptions) -> Result<Client, ClientError> {
        if cluster.is_empty() {
            return Err(ClientError::InvalidArgument("the cluster address list is empty".to_string()));
        }
        if let Some(bad) = cluster.iter().find(|addr| addr.trim().is_empty() || !addr.contains(':')) {
            return Err(ClientError::InvalidArgument(format!("cluster address {bad:?} is not host:port")));
        }
        if options.deadline.is_zero() || options.connect_timeout.is_zero() || options.request_timeout.is_zero() {
            return Err(ClientError::InvalidArgument("deadline and timeouts must be above zero".to_string()));
        }
        let mut rng = Rng::new(entropy_seed());
        let session = Session { client_id: rng.next_nonzero(), seq: FIRST_SEQ };
        let cursor = rng.range(0, cluster.len() as u64) as usize;
        Ok(Client { cluster, options, connection: None, cursor, session, rng })
    }

    /// A client connected (handshake done) to some node of `cluster`.
    pub fn connect(cluster: Vec<String>, options: ClientOptions) -> Result<Client, ClientError> {
        let mut client = Client::new(cluster, options)?;
        client.run(|| "connect".to_string(), None, false, |_| true)?;
        Ok(client)
    }

    pub fn cluster(&self) -> &[String] {
        &self.cluster
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The session the next write will carry.
    pub fn session(&self) -> Session {
        self.session
    }

    /// The address of the current connection, if any.
    pub fn connected_to(&self) -> Option<&str> {
        self.connection.as_ref().map(Connection::addr)
    }

    /// Stores `value` under `key`.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<Answered<()>, ClientError> {
        let (key, value) = (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
        let op = describe("set", &key);
        let answer =
            self.write(op, |session| Command::Set { session, key, value }, |r| matches!(r, ClientReply::Ok))?;
        Ok(map_answer(answer, |_| ()))
    }

    /// The value of `key`, `None` if absent. [`ReadConsistency::Local`] may answer from any node.
    pub fn get(&mut self, key: &[u8], consistency: ReadConsistency) -> Result<Answered<Option<Bytes>>, ClientError> {
        if key.len() > KEY_BYTES_MAX {
            return Err(ClientError::InvalidArgument(format!("key is {} bytes, above {KEY_BYTES_MAX}", key.len())));
        }
        let key = Bytes::copy_from_slice(key);
        let op = describe("get", &key);
        let needs_leader = consistency == ReadConsistency::Linearizable;
        let request = ClientRequest::Get { key, consistency };
        let accept = |reply: &ClientReply| matches!(reply, ClientReply::Value(_) | ClientReply::NotFound);
        let answer = self.run(|| op, Some(&request), needs_leader, accept)?;
        Ok(map_answer(answer, |reply| match reply {
            Some(ClientReply::Value(value)) => Some(value),
            _ => None,
        }))
    }

    /// Removes `key`; the answer says whether it existed.
    pub fn delete(&mut self, key: &[u8]) -> Result<Answered<bool>, ClientError> {
        let key = Bytes::copy_from_slice(key);
        let op = describe("del", &key);
        let accept = |reply: &ClientReply| matches!(reply, ClientReply::Ok | ClientReply::NotFound);
        let answer = self.write(op, |session| Command::Delete { session, key }, accept)?;
        Ok(map_answer(answer, |reply| matches!(reply, Some(ClientReply::Ok))))
    }

    /// Stores `new` under `key` if its value is `expected` (`None`: if the key is absent).
    pub fn cas(
        &mut self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<Answered<Result<(), CasFailed>>, ClientError> {
        let key = Bytes::copy_from_slice(key);
        let expected = expected.map(Bytes::copy_from_slice);
        let new = Bytes::copy_from_slice(new);
        let op = describe("cas", &key);
        let accept = |reply: &ClientReply| matches!(reply, ClientReply::Ok | ClientReply::CasFailed { .. });
        let answer = self.write(op, |session| Command::Cas { session, key, expected, new }, accept)?;
        Ok(map_answer(answer, |reply| match reply {
            Some(ClientReply::CasFailed { current }) => Err(CasFailed { current }),
            _ => Ok(()),
        }))
    }

    /// The status of the node at `addr` (which need not be in the cluster list). One attempt, no
    /// retries: a status is about that node, and a table of nodes should not wait for a dead one.
    pub fn status(&mut self, addr: &str) -> Result<Answered<StatusReport>, ClientError> {
        let deadline = Instant::now() + self.options.deadline;
        let reused = self.connection.take_if_to(addr);
        let result = self.attempt_on(reused, addr, Some(&ClientRequest::Status), deadline);
        let node_error = |failure: Failure| ClientError::Node { addr: addr.to_string(), failure: failure.to_string() };
        let (connection, reply) = result.map_err(|(failure, _)| node_error(failure))?;
        let answer = Answered { value: (), addr: connection.addr().to_string(), node_id: connection.node_id() };
        if self.connection.is_none() {
            self.connection = Some(connection);
        }
        match reply {
            Some(ClientReply::Status(report)) => Ok(map_answer(answer, |_| report)),
            other => Err(node_error(Failure::Unexpected(format!("reply {}", reply_name(other.as_ref()))))),
        }
    }

    /// Sends the write that `make` builds for the current session; retries it unchanged.
    fn write(
        &mut self,
        op: String,
        make: impl FnOnce(Session) -> Command,
        accept: impl Fn(&ClientReply) -> bool,
    ) -> Result<Answered<Option<ClientReply>>, ClientError> {
        let command = make(self.session);
        command.validate().map_err(|error| ClientError::InvalidArgument(error.to_string()))?;
        let request = ClientRequest::Write(command);
        match self.run(|| op, Some(&request), true, accept) {
            Ok(answer) => {
                self.session.seq += 1;
                Ok(answer)
            }
            Err(error) => {
                // The write may still commit later: never reuse its (client id, seq) for another write.
                self.session = Session { client_id: self.rng.next_nonzero(), seq: FIRST_SEQ };
                Err(error)
            }
        }
    }

    /// The retry loop: attempts `request` (or only a handshake, if `None`) until a reply that
    /// `accept`s arrives, a non-retryable error, or the deadline.
    fn run(
        &mut self,
        op: impl FnOnce() -> String,
        request: Option<&ClientRequest>,
        needs_leader: bool,
        accept: impl Fn(&ClientReply) -> bool,
    ) -> Result<Answered<Option<ClientReply>>, ClientError> {
        let started = Instant::now();
        let deadline = started + self.options.deadline;
        let mut log = AttemptLog::new(&self.cluster);
        let mut excluded: Vec<String> = Vec::new();
        let mut failures_in_a_row = 0u32;
        let mut redirects_in_a_row = 0u32;
        let mut write_sent = false;
        let mut addr = self.connected_to().map_or_else(|| self.cluster[self.cursor].clone(), str::to_string);
        let is_write = matches!(request, Some(ClientRequest::Write(_)));
        loop {
            let failure = match self.attempt(&addr, request, deadline) {
                Ok(reply) if reply.as_ref().is_none_or(&accept) => return Ok(self.answered(reply)),
                Ok(reply) => {
                    // The node answered, so a write reached it; drop a connection that talks nonsense.
                    write_sent |= is_write;
                    self.connection = None;
                    Failure::Unexpected(format!("reply {}", reply_name(reply.as_ref())))
                }
                Err((failure, sent)) => {
                    write_sent |= is_write && sent;
                    failure
                }
            };
            log.record(&addr, &failure);
            let next = self.next_step(failure, &addr, &excluded);
            failures_in_a_row += 1;
            let mut pause = true;
            match next {
                Next::Fail(error) => return Err(error),
                Next::Redirect(leader) => {
                    redirects_in_a_row += 1;
                    pause = redirects_in_a_row > 1;
                    addr = leader;
                }
                Next::Same => redirects_in_a_row = 0,
                Next::Other => {
                    redirects_in_a_row = 0;
                    addr = self.next_address(&addr, &excluded);
                }
                Next::Exclude => {
                    excluded.push(addr.clone());
                    if self.cluster.iter().all(|a| excluded.contains(a)) {
                        let nodes = log.into_nodes();
                        return Err(ClientError::ClusterMismatch { cluster_id: self.options.cluster_id, nodes });
                    }
                    addr = self.next_address(&addr, &excluded);
                    pause = false;
                }
            }
            let now = Instant::now();
            if pause && now < deadline {
                thread::sleep(self.backoff(failures_in_a_row).min(deadline - now));
            }
            // An attempt started at the deadline could only fail: give up instead.
            let now = Instant::now();
            if now >= deadline {
                let attempts = log.attempts();
                let nodes = log.into_nodes();
                let elapsed = now - started;
                let outcome_unknown = write_sent;
                return Err(ClientError::GaveUp { op: op(), needs_leader, elapsed, attempts, nodes, outcome_unknown });
            }
        }
    }

    /// Decides what follows a failed attempt against `addr`.
    fn next_step(&self, failure: Failure, addr: &str, excluded: &[String]) -> Next {
        match failure {
            Failure::NotLeader { leader_addr, .. }
                if !leader_addr.is_empty() && leader_addr != addr && !excluded.contains(&leader_addr) =>
            {
                Next::Redirect(leader_addr)
            }
            Failure::NotLeader { .. } => Next::Other,
            Failure::WrongCluster { .. } => Next::Exclude,
            Failure::Server { code, message } => match code {
                ErrorCode::Overloaded | ErrorCode::OutcomeUnknown => Next::Same,
                ErrorCode::ShuttingDown | ErrorCode::Internal | ErrorCode::Unknown(_) => Next::Other,
                ErrorCode::ClusterMismatch | ErrorCode::UnsupportedVersion => Next::Exclude,
                ErrorCode::SessionExpired => {
                    Next::Fail(ClientError::SessionExpired { addr: addr.to_string(), message })
                }
                ErrorCode::MalformedFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::UnknownMessageType
                | ErrorCode::LimitExceeded
                | ErrorCode::HandshakeRequired
                | ErrorCode::BadHello
                | ErrorCode::UnexpectedMessage
                | ErrorCode::StaleSequence => {
                    Next::Fail(ClientError::Refused { addr: addr.to_string(), code, message })
                }
            },
            Failure::Resolve(_)
            | Failure::Connect { .. }
            | Failure::Timeout(_)
            | Failure::Closed
            | Failure::Io(_)
            | Failure::Malformed(_)
            | Failure::Unexpected(_) => Next::Other,
        }
    }

    /// One attempt against `addr`, reusing the current connection if it goes there.
    fn attempt(
        &mut self,
        addr: &str,
        request: Option<&ClientRequest>,
        deadline: Instant,
    ) -> Result<Option<ClientReply>, (Failure, bool)> {
        let reused = self.connection.take_if_to(addr);
        self.connection = None;
        let (connection, reply) = self.attempt_on(reused, addr, request, deadline)?;
        self.connection = Some(connection);
        Ok(reply)
    }

    /// Sends `request` on `reused` if given, else on a new connection to `addr`. A reused connection
    /// that turns out to be closed (the node dropped it while idle) is replaced once, at once. Hands
    /// the connection back only on success; the error says whether the request may have been sent.
    fn attempt_on(
        &self,
        reused: Option<Connection>,
        addr: &str,
        request: Option<&ClientRequest>,
        deadline: Instant,
    ) -> Result<(Connection, Option<ClientReply>), (Failure, bool)> {
        let mut sent_before = false;
        if let Some(connection) = reused {
            match self.send_on(connection, request, deadline) {
                Err((Failure::Closed | Failure::Io(_), sent)) => sent_before = sent,
                other => return other,
            }
        }
        let until = deadline.min(Instant::now() + self.options.connect_timeout + self.options.request_timeout);
        let connection = Connection::open(addr, self.options.cluster_id, self.options.connect_timeout, until)
            .map_err(|failure| (failure, sent_before))?;
        self.send_on(connection, request, deadline)
    }

    fn send_on(
        &self,
        mut connection: Connection,
        request: Option<&ClientRequest>,
        deadline: Instant,
    ) -> Result<(Connection, Option<ClientReply>), (Failure, bool)> {
        let Some(request) = request else {
            return Ok((connection, None));
        };
        let until = deadline.min(Instant::now() + self.options.request_timeout);
        let reply = connection.call(request, until).map_err(|failure| match failure {
            Failure::Timeout(_) => (Failure::Timeout(self.options.request_timeout.min(self.options.deadline)), true),
            other => (other, true),
        })?;
        Ok((connection, Some(reply)))
    }

    /// The address after `addr` in the cluster list, skipping `excluded`. An address that is not in
    /// the list (a redirect target) continues the cycle where it left off.
    fn next_address(&mut self, addr: &str, excluded: &[String]) -> String {
        let count = self.cluster.len();
        let start = self.cluster.iter().position(|a| a == addr).map_or(self.cursor, |i| i + 1);
        for step in 0..count {
            let index = (start + step) % count;
            if !excluded.contains(&self.cluster[index]) {
                self.cursor = index;
                return self.cluster[index].clone();
            }
        }
        addr.to_string()
    }

    /// Exponential backoff with jitter: a random pause in `[b/2, b]`, `b` = min(MIN * 2^(n-1), MAX).
    fn backoff(&mut self, failures_in_a_row: u32) -> Duration {
        let exponent = failures_in_a_row.saturating_sub(1).min(16);
        let ceiling = BACKOFF_MIN.saturating_mul(1 << exponent).min(BACKOFF_MAX);
        let half_us = (ceiling.as_micros() / 2) as u64;
        Duration::from_micros(half_us + self.rng.range(0, half_us + 1))
    }

    fn answered<T>(&self, value: T) -> Answered<T> {
        let (addr, node_id) =
            self.connection.as_ref().map_or((String::new(), 0), |c| (c.addr().to_string(), c.node_id()));
        Answered { value, addr, node_id }
    }
}

trait TakeIfTo {
    fn take_if_to(&mut self, addr: &str) -> Option<Connection>;
}

impl TakeIfTo for Option<Connection> {
    /// Takes the connection out if it goes to `addr`; leaves it in place otherwise.
    fn take_if_to(&mut self, addr: &str) -> Option<Connection> {
        if self.as_ref().is_some_and(|c| c.addr() == addr) {
            self.take()
        } else {
            None
        }
    }
}

fn reply_name(reply: Option<&ClientReply>) -> &'static str {
    match reply {
        None => "(none)",
        Some(ClientReply::Ok) => "Ok",
        Some(ClientReply::Value(_)) => "Value",
        Some(ClientReply::NotFound) => "NotFound",
        Some(ClientReply::CasFailed { .. }) => "CasFailed",
        Some(ClientReply::Status(_)) => "StatusReport",
        Some(ClientReply::NotLeader { .. }) => "NotLeader",
    }
}

fn map_answer<T, U>(answer: Answered<T>, f: impl FnOnce(T) -> U) -> Answered<U> {
    Answered { value: f(answer.value), addr: answer.addr, node_id: answer.node_id }
}

/// `get "some-key"`, the key shortened for error messages.
fn describe(op: &str, key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    if text.chars().count() > KEY_DISPLAY_CHARS_MAX {
        let short: String = text.chars().take(KEY_DISPLAY_CHARS_MAX).collect();
        format!("{op} {short:?}...")
    } else {
        format!("{op} {text:?}")
    }
}

/// Distinguishes clients created in the same process within one clock tick.
static CLIENT_INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A seed from the wall clock, the process id and a per-process counter. Not cryptographic: it
/// only has to make two clients started at the same moment pick different ids with overwhelming
/// probability (the generator spreads nearby seeds apart).
fn entropy_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let pid = u64::from(std::process::id());
    let instance = CLIENT_INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    nanos ^ pid.rotate_left(32) ^ instance.wrapping_mul(0xD1B5_4A32_D192_ED03)
}

//! A blocking client for a mini-raft cluster, over `std::net` sockets.
//!
//! [`Client`] keeps one connection to its current target node and speaks the wire protocol of
//! `protocol.md`: the `Hello` handshake (role client, node id 0), then one request at a time.
//! [`PipelinedSession`] keeps many writes of one session in flight on one connection; its rules
//! live in [`SessionWrites`] (no I/O), which the simulator runs too.
//!
//! Guarantees:
//! - Writes carry a session registered through the log (`protocol.md` §7.1). The client registers
//!   lazily, before its first write, and keeps the session across calls; reads and `status` need
//!   none. A registration whose answer is lost is simply sent again: the duplicate only opens a
//!   session nobody uses, which the cluster evicts in time.
//! - Writes use `seq` = 1, 2, 3, ... with `first_outstanding` = the seq being sent (one write at a
//!   time). A write is retried with the **same** seq until a definite answer arrives, so a retry
//!   never applies a write twice. One seq names one write: after any failure the next write takes
//!   the next seq, and its `first_outstanding` seals the abandoned one (a delayed copy of it can
//!   no longer apply once the next write has).
//! - [`ClientError::OutcomeUnknown`]: the cluster forgot the session (`SessionExpired`) while the
//!   write was being retried. The write may or may not have been applied; the caller must not
//!   assume either. The client drops the session and registers a new one before its next write.
//!   [`ClientError::is_outcome_unknown`] also covers a write that gave up at its deadline.
//! - Every call ends by its deadline ([`ClientOptions::deadline`]); until then the client follows
//!   `NotLeader` redirects and retries with exponential backoff and jitter on timeouts, connection
//!   errors, `Overloaded`, `OutcomeUnknown`, `ShuttingDown` and an unknown or unreachable leader,
//!   cycling through the cluster's addresses. The final error names every node and what it said last.
//! - Nothing the network sends can make the client panic.
//! - Each successful call reports which node answered ([`Answered`]).

mod conn;
mod error;
pub mod frames;
mod members;
mod pipeline;
mod retry;
pub mod session;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pipeline_tests;

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::kv::{Command, Session, FIRST_SEQ, KEY_BYTES_MAX};
use crate::raft::rng::Rng;
use crate::wire::{ClientReply, ClientRequest, ErrorCode, ReadConsistency, StatusReport};
use conn::Connection;
use error::Failure;
pub use error::{ClientError, NodeReport};
pub use pipeline::{PipelinedSession, PIPELINE_WRITES_IN_FLIGHT_MAX};
pub use session::{Completion, SessionWrites, WriteHandle, WriteOp, WriteReply};

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

/// The registered session of a [`Client`] and the seq its next write takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OpenSession {
    session_id: u64,
    next_seq: u64,
}

/// A blocking client with one session. Not `Sync`: one thread per client (each has its own session).
pub struct Client {
    cluster: Vec<String>,
    options: ClientOptions,
    connection: Option<Connection>,
    /// Index in `cluster` of the address tried when there is no connection.
    cursor: usize,
    /// `None` until the first write registers, and again after the session expired.
    session: Option<OpenSession>,
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
        let cursor = rng.range(0, cluster.len() as u64) as usize;
        Ok(Client { cluster, options, connection: None, cursor, session: None, rng })
    }

    /// A client connected (handshake done) to some node of `cluster`.
    pub fn connect(cluster: Vec<String>, options: ClientOptions) -> Result<Client, ClientError> {
        let mut client = Client::new(cluster, options)?;
        let deadline = Instant::now() + client.options.deadline;
        client.run(|| "connect".to_string(), None, false, |_| true, deadline)?;
        Ok(client)
    }

    pub fn cluster(&self) -> &[String] {
        &self.cluster
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The session the next write will carry (`first_outstanding` = `seq`), or `None` if the next
    /// write registers a session first.
    pub fn session(&self) -> Option<Session> {
        self.session.map(|open| Session::serial(open.session_id, open.next_seq))
    }

    /// Registers a new session now (the next write uses it, from seq 1), replacing the current
    /// one, and returns its id. Writes register on their own; this is for callers that want the
    /// round trip out of their first write's latency.
    pub fn register(&mut self) -> Result<Answered<u64>, ClientError> {
        let deadline = Instant::now() + self.options.deadline;
        self.register_until("register", deadline)
    }

    /// The address of the current connection, if any.
    pub fn connected_to(&self) -> Option<&str> {
        self.connection.as_ref().map(Connection::addr)
    }

    /// Closes the connection, if any: the next call starts at a random address of the cluster
    /// list, as a new client's first call does, and keeps the session. For callers that spread
    /// their calls over the nodes, or that model clients coming and going (`raftctl chaos`).
    pub fn disconnect(&mut self) {
        self.connection = None;
        self.cursor = self.rng.range(0, self.cluster.len() as u64) as usize;
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
        let deadline = Instant::now() + self.options.deadline;
        let answer = self.run(|| op, Some(&request), needs_leader, accept, deadline)?;
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
        self.status_with(addr, &ClientRequest::Status).map_err(|failure| node_error(addr, failure))
    }

    /// Like [`Client::status`], with the report's extension (`protocol.md` §7.2: the node's HTTP
    /// address, in `http_addr`). A node older than the extension refuses the request as malformed
    /// and closes the connection: then the plain report is asked for, and `http_addr` is `None`.
    pub fn status_detailed(&mut self, addr: &str) -> Result<Answered<StatusReport>, ClientError> {
        match self.status_with(addr, &ClientRequest::StatusDetailed) {
            Err(Failure::Server { code: ErrorCode::MalformedFrame, .. }) => {
                self.connection = None; // the node closes it after the error
                self.status_with(addr, &ClientRequest::Status)
            }
            other => other,
        }
        .map_err(|failure| node_error(addr, failure))
    }

    fn status_with(&mut self, addr: &str, request: &ClientRequest) -> Result<Answered<StatusReport>, Failure> {
        let deadline = Instant::now() + self.options.deadline;
        let reused = self.connection.take_if_to(addr);
        let result = self.attempt_on(reused, addr, Some(request), deadline);
        let (connection, reply) = result.map_err(|(failure, _)| failure)?;
        let answer = Answered { value: (), addr: connection.addr().to_string(), node_id: connection.node_id() };
        if self.connection.is_none() {
            self.connection = Some(connection);
        }
        match reply {
            Some(ClientReply::Status(report)) => Ok(map_answer(answer, |_| report)),
            other => Err(Failure::Unexpected(format!("reply {}", reply_name(other.as_ref())))),
        }
    }

    /// Sends the write that `make` builds for the current session (registering one first if
    /// there is none); retries it unchanged until a definite answer or the deadline.
    fn write(
        &mut self,
        op: String,
        make: impl FnOnce(Session) -> Command,
        accept: impl Fn(&ClientReply) -> bool,
    ) -> Result<Answered<Option<ClientReply>>, ClientError> {
        let deadline = Instant::now() + self.options.deadline;
        // Arguments are checked before anything goes out (a registration included).
        let mut command = make(Session::serial(1, FIRST_SEQ));
        command.validate().map_err(|error| ClientError::InvalidArgument(error.to_string()))?;
        let open = match self.session {
            Some(open) => open,
            None => {
                self.register_until(&format!("{op}: registering a session"), deadline)?;
                self.session.ok_or_else(|| ClientError::InvalidArgument("registration left no session".into()))?
            }
        };
        set_session(&mut command, Session::serial(open.session_id, open.next_seq));
        let request = ClientRequest::Write(command);
        let result = self.run(|| op, Some(&request), true, accept, deadline);
        // One seq names one write, whatever became of it.
        let next = OpenSession { session_id: open.session_id, next_seq: open.next_seq + 1 };
        self.session = match &result {
            Err(ClientError::OutcomeUnknown { .. }) => None,
            _ => Some(next),
        };
        result
    }

    /// Commits a registration (retried like a write until `deadline`) and makes it the session.
    fn register_until(&mut self, op: &str, deadline: Instant) -> Result<Answered<u64>, ClientError> {
        let accept = |reply: &ClientReply| matches!(reply, ClientReply::Registered { .. });
        let answer = self.run(|| op.to_string(), Some(&ClientRequest::RegisterClient), true, accept, deadline)?;
        let Some(ClientReply::Registered { session_id }) = answer.value else {
            return Err(ClientError::Node { addr: answer.addr, failure: "answered without a session id".into() });
        };
        debug_assert_ne!(session_id, 0, "the decoder refuses session id 0");
        self.session = Some(OpenSession { session_id, next_seq: FIRST_SEQ });
        Ok(map_answer(answer, |_| session_id))
    }
}

/// Puts `session` into a write command (a registration has none).
fn set_session(command: &mut Command, session: Session) {
    match command {
        Command::Register { .. } => {}
        Command::Set { session: slot, .. }
        | Command::Delete { session: slot, .. }
        | Command::Cas { session: slot, .. } => *slot = session,
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
        Some(ClientReply::Registered { .. }) => "Registered",
        Some(ClientReply::Members(_)) => "Members",
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

fn node_error(addr: &str, failure: Failure) -> ClientError {
    ClientError::Node { addr: addr.to_string(), failure: failure.to_string() }
}

//! [`ClientError`]: why a client call failed, in words a person can act on, and [`Failure`]: what one
//! attempt against one node ran into (the retry loop decides from it what to do next).

use std::fmt;
use std::io;
use std::time::Duration;

use crate::wire::{ErrorCode, WireError};

/// Why a [`Client`](super::Client) call failed. `Display` names the nodes involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The call was refused before anything was sent: empty cluster, key or value above its limit.
    InvalidArgument(String),
    /// The deadline passed without a definite answer. `nodes` says what each node said last.
    GaveUp {
        /// What was attempted, e.g. `set "foo"`.
        op: String,
        /// True when the call needs the leader (writes, linearizable reads).
        needs_leader: bool,
        elapsed: Duration,
        attempts: usize,
        nodes: Vec<NodeReport>,
        /// A write was sent at least once: it may or may not have taken effect.
        outcome_unknown: bool,
    },
    /// Every address answered `ClusterMismatch` (or an unsupported protocol version): the client is
    /// pointed at another cluster, or uses the wrong cluster id.
    ClusterMismatch { cluster_id: u64, nodes: Vec<NodeReport> },
    /// A node refused the request for a reason retrying cannot fix (`LimitExceeded`, `BadHello`,
    /// `StaleSequence`, ...).
    Refused { addr: String, code: ErrorCode, message: String },
    /// The write's outcome is **unknown**: it may or may not have been applied, and the caller
    /// must not assume either (read the key back if it matters). Raised when the cluster forgot
    /// the session (`SessionExpired`) while the write was being retried, or, in a
    /// [`PipelinedSession`](super::PipelinedSession), when a write sent at least once got no
    /// definite answer by its deadline. A [`Client`](super::Client) registers a new session
    /// before its next write.
    OutcomeUnknown { op: String, addr: String, reason: String },
    /// A [`PipelinedSession`](super::PipelinedSession) already has as many writes in flight as a
    /// session may: wait for some of them (from `first_outstanding` up) before submitting more.
    WindowFull { in_flight: usize, first_outstanding: u64 },
    /// A single-node call (`status`) failed.
    Node { addr: String, failure: String },
}

/// What one node said during a call: the last outcome and how many attempts went to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    pub addr: String,
    /// The last thing this node said, e.g. "refused connection"; "not tried" when `attempts` is 0.
    pub last: String,
    pub attempts: usize,
}

impl fmt::Display for NodeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempts == 0 {
            return write!(f, "{} not tried", self.addr);
        }
        write!(f, "{} {}", self.addr, self.last)?;
        if self.attempts > 1 {
            write!(f, " (x{})", self.attempts)?;
        }
        Ok(())
    }
}

fn write_nodes(f: &mut fmt::Formatter<'_>, nodes: &[NodeReport]) -> fmt::Result {
    for (i, node) in nodes.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{node}")?;
    }
    Ok(())
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidArgument(reason) => write!(f, "invalid request: {reason}"),
            ClientError::GaveUp { op, needs_leader, elapsed, attempts, nodes, outcome_unknown } => {
                let what = if *needs_leader { "no leader" } else { "no node answered" };
                write!(f, "{op}: {what} within {:.1} s ({attempts} attempts): ", elapsed.as_secs_f64())?;
                write_nodes(f, nodes)?;
                if *outcome_unknown {
                    f.write_str("; the write may or may not have taken effect")?;
                }
                Ok(())
            }
            ClientError::ClusterMismatch { cluster_id, nodes } => {
                write!(f, "no node belongs to cluster {cluster_id} (check --cluster and --cluster-id): ")?;
                write_nodes(f, nodes)
            }
            ClientError::Refused { addr, code, message } => {
                write!(f, "{addr} refused the request: {code:?}: {message}")
            }
            ClientError::OutcomeUnknown { op, addr, reason } => {
                write!(f, "{op}: the write may or may not have taken effect ({addr}: {reason})")
            }
            ClientError::WindowFull { in_flight, first_outstanding } => write!(
                f,
                "{in_flight} writes in flight: wait for the replies from seq {first_outstanding} on before submitting more"
            ),
            ClientError::Node { addr, failure } => write!(f, "{addr} {failure}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// True if a write may or may not have taken effect: [`ClientError::OutcomeUnknown`], or a
    /// write that was sent and then gave up at its deadline.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, ClientError::OutcomeUnknown { .. } | ClientError::GaveUp { outcome_unknown: true, .. })
    }
}

/// What went wrong in one attempt against one node.
#[derive(Debug)]
pub(crate) enum Failure {
    Resolve(String),
    Connect {
        error: io::Error,
        timeout: Duration,
    },
    /// The node did not answer within the request timeout (or the call's deadline).
    Timeout(Duration),
    Closed,
    Io(io::Error),
    /// The node sent bytes that are not a valid frame, or a reply that does not fit the request.
    Malformed(WireError),
    Unexpected(String),
    NotLeader {
        leader_id: u64,
        leader_addr: String,
    },
    Server {
        code: ErrorCode,
        message: String,
    },
    /// `HelloOk` named another cluster or protocol version.
    WrongCluster {
        cluster_id: u64,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Resolve(reason) => write!(f, "could not be resolved ({reason})"),
            Failure::Connect { error, timeout } => match error.kind() {
                io::ErrorKind::ConnectionRefused => f.write_str("refused connection"),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    write!(f, "did not accept a connection within {} ms", timeout.as_millis())
                }
                _ => write!(f, "could not be connected to ({error})"),
            },
            Failure::Timeout(timeout) => write!(f, "did not answer within {} ms", timeout.as_millis()),
            Failure::Closed => f.write_str("closed the connection"),
            Failure::Io(error) => write!(f, "connection failed ({error})"),
            Failure::Malformed(error) => write!(f, "sent a malformed frame ({error})"),
            Failure::Unexpected(what) => write!(f, "sent an unexpected {what}"),
            Failure::NotLeader { leader_addr, .. } if leader_addr.is_empty() => {
                f.write_str("answered NotLeader(leader unknown)")
            }
            Failure::NotLeader { leader_id, leader_addr } => {
                write!(f, "answered NotLeader(leader {leader_id} at {leader_addr})")
            }
            Failure::Server { code, message } => write!(f, "answered {code:?} ({message})"),
            Failure::WrongCluster { cluster_id } => write!(f, "belongs to cluster {cluster_id}"),
        }
    }
}

/// Per-address record of a call's attempts, in the order the addresses were first seen.
#[derive(Clone, Debug, Default)]
pub(crate) struct AttemptLog {
    nodes: Vec<NodeReport>,
    attempts: usize,
}

impl AttemptLog {
    /// A log listing `cluster` first, so that untried addresses show up as "not tried".
    pub fn new(cluster: &[String]) -> AttemptLog {
        let nodes = cluster.iter().map(|addr| NodeReport { addr: addr.clone(), last: String::new(), attempts: 0 });
        AttemptLog { nodes: nodes.collect(), attempts: 0 }
    }

    pub fn record(&mut self, addr: &str, failure: &Failure) {
        self.attempts += 1;
        let last = failure.to_string();
        match self.nodes.iter_mut().find(|node| node.addr == addr) {
            Some(node) => {
                node.last = last;
                node.attempts += 1;
            }
            None => self.nodes.push(NodeReport { addr: addr.to_string(), last, attempts: 1 }),
        }
    }

    pub fn attempts(&self) -> usize {
        self.attempts
    }

    pub fn into_nodes(self) -> Vec<NodeReport> {
        self.nodes
    }
}

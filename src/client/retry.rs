//! The retry loop of [`Client`]: one request, attempted against the cluster until a reply it
//! accepts, an error retrying cannot fix, or the call's deadline.
//!
//! Per failed attempt (`protocol.md` §11): follow a `NotLeader` redirect at once (a second one in
//! a row after a backoff); back off and retry the same node on `Overloaded` / `OutcomeUnknown`;
//! back off and try the next address on anything else. A redirect to the address that just
//! refused a connection is not followed: during a failover the followers keep naming the dead
//! leader for an election timeout, and following them would bounce between a follower and a
//! refused port without pause. The client backs off and asks the other nodes instead.

use std::thread;
use std::time::{Duration, Instant};

use super::conn::Connection;
use super::error::{AttemptLog, Failure};
use super::{reply_name, Answered, Client, ClientError, TakeIfTo, BACKOFF_MAX, BACKOFF_MIN};
use crate::raft::rng::Rng;
use crate::wire::{ClientReply, ClientRequest, ErrorCode};

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
    /// End the call.
    Stop(Stop),
}

/// Why a call ends before its deadline.
enum Stop {
    /// The node no longer knows the write's session: the outcome is unknown.
    Expired { addr: String, message: String },
    /// Retrying cannot help.
    Fail(ClientError),
}

/// What one call has learned so far.
struct CallState {
    log: AttemptLog,
    excluded: Vec<String>,
    failures_in_a_row: u32,
    redirects_in_a_row: u32,
    write_sent: bool,
    /// The last address a connection to it failed; cleared once it answers.
    unreachable: Option<String>,
}

impl Client {
    /// Attempts `request` (or only a handshake, if `None`) until a reply that `accept`s arrives,
    /// a non-retryable error, or `deadline`.
    pub(super) fn run(
        &mut self,
        op: impl FnOnce() -> String,
        request: Option<&ClientRequest>,
        needs_leader: bool,
        accept: impl Fn(&ClientReply) -> bool,
        deadline: Instant,
    ) -> Result<Answered<Option<ClientReply>>, ClientError> {
        let started = Instant::now();
        let mut call = CallState {
            log: AttemptLog::new(&self.cluster),
            excluded: Vec::new(),
            failures_in_a_row: 0,
            redirects_in_a_row: 0,
            write_sent: false,
            unreachable: None,
        };
        let mut addr = self.connected_to().map_or_else(|| self.cluster[self.cursor].clone(), str::to_string);
        let is_write = matches!(request, Some(ClientRequest::Write(_)));
        loop {
            let failure = match self.attempt(&addr, request, deadline) {
                Ok(reply) if reply.as_ref().is_none_or(&accept) => return Ok(self.answered(reply)),
                Ok(reply) => {
                    // The node answered, so a write reached it; drop a connection that talks nonsense.
                    call.write_sent |= is_write;
                    self.connection = None;
                    Failure::Unexpected(format!("reply {}", reply_name(reply.as_ref())))
                }
                Err((failure, sent)) => {
                    call.write_sent |= is_write && sent;
                    failure
                }
            };
            if matches!(failure, Failure::Connect { .. } | Failure::Resolve(_)) {
                call.unreachable = Some(addr.clone());
            } else if call.unreachable.as_deref() == Some(addr.as_str()) {
                call.unreachable = None;
            }
            call.log.record(&addr, &failure);
            call.failures_in_a_row += 1;
            let next = self.next_step(failure, &addr, &call);
            let pause = match self.move_on(next, &mut addr, &mut call) {
                Ok(pause) => pause,
                Err(Stop::Expired { addr, message }) => {
                    return Err(ClientError::OutcomeUnknown { op: op(), addr, reason: message })
                }
                Err(Stop::Fail(error)) => return Err(error),
            };
            let now = Instant::now();
            if pause && now < deadline {
                thread::sleep(backoff(&mut self.rng, call.failures_in_a_row).min(deadline - now));
            }
            // An attempt started at the deadline could only fail: give up instead.
            let now = Instant::now();
            if now >= deadline {
                let (attempts, outcome_unknown, elapsed) = (call.log.attempts(), call.write_sent, now - started);
                let nodes = call.log.into_nodes();
                return Err(ClientError::GaveUp { op: op(), needs_leader, elapsed, attempts, nodes, outcome_unknown });
            }
        }
    }

    /// Picks the next address for a retry; `Ok(true)` if the loop should back off first. A step
    /// that ends the call (or the last address excluded) comes back as `Err`.
    fn move_on(&mut self, next: Next, addr: &mut String, call: &mut CallState) -> Result<bool, Stop> {
        Ok(match next {
            Next::Redirect(leader) => {
                call.redirects_in_a_row += 1;
                *addr = leader;
                call.redirects_in_a_row > 1
            }
            Next::Same => {
                call.redirects_in_a_row = 0;
                true
            }
            Next::Other => {
                call.redirects_in_a_row = 0;
                *addr = self.next_address(addr, &call.excluded);
                true
            }
            Next::Exclude => {
                call.excluded.push(addr.clone());
                if self.cluster.iter().all(|a| call.excluded.contains(a)) {
                    let nodes = std::mem::take(&mut call.log).into_nodes();
                    let cluster_id = self.options.cluster_id;
                    return Err(Stop::Fail(ClientError::ClusterMismatch { cluster_id, nodes }));
                }
                *addr = self.next_address(addr, &call.excluded);
                false
            }
            Next::Stop(stop) => return Err(stop),
        })
    }

    /// Decides what follows a failed attempt against `addr`.
    fn next_step(&self, failure: Failure, addr: &str, call: &CallState) -> Next {
        match failure {
            Failure::NotLeader { leader_addr, .. }
                if !leader_addr.is_empty()
                    && leader_addr != addr
                    && !call.excluded.contains(&leader_addr)
                    && call.unreachable.as_deref() != Some(leader_addr.as_str()) =>
            {
                Next::Redirect(leader_addr)
            }
            Failure::NotLeader { .. } => Next::Other,
            Failure::WrongCluster { .. } => Next::Exclude,
            Failure::Server { code, message } => match code {
                ErrorCode::Overloaded | ErrorCode::OutcomeUnknown => Next::Same,
                ErrorCode::ShuttingDown | ErrorCode::Internal | ErrorCode::Unknown(_) => Next::Other,
                ErrorCode::ClusterMismatch | ErrorCode::UnsupportedVersion => Next::Exclude,
                ErrorCode::SessionExpired => Next::Stop(Stop::Expired { addr: addr.to_string(), message }),
                ErrorCode::MalformedFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::UnknownMessageType
                | ErrorCode::LimitExceeded
                | ErrorCode::HandshakeRequired
                | ErrorCode::BadHello
                | ErrorCode::UnexpectedMessage
                | ErrorCode::StaleSequence
                | ErrorCode::SessionWindowFull
                | ErrorCode::MembershipRefused => {
                    Next::Stop(Stop::Fail(ClientError::Refused { addr: addr.to_string(), code, message }))
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
    pub(super) fn attempt_on(
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
    pub(super) fn next_address(&mut self, addr: &str, excluded: &[String]) -> String {
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

    fn answered<T>(&self, value: T) -> Answered<T> {
        let (addr, node_id) =
            self.connection.as_ref().map_or((String::new(), 0), |c| (c.addr().to_string(), c.node_id()));
        Answered { value, addr, node_id }
    }
}

/// Exponential backoff with jitter: a random pause in `[b/2, b]`, `b` = min(MIN * 2^(n-1), MAX).
pub(super) fn backoff(rng: &mut Rng, failures_in_a_row: u32) -> Duration {
    let exponent = failures_in_a_row.saturating_sub(1).min(16);
    let ceiling = BACKOFF_MIN.saturating_mul(1 << exponent).min(BACKOFF_MAX);
    let half_us = (ceiling.as_micros() / 2) as u64;
    Duration::from_micros(half_us + rng.range(0, half_us + 1))
}

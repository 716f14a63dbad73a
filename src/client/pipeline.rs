//! [`PipelinedSession`]: many writes of one session in flight on one connection, each applied
//! exactly once (`protocol.md` §7.1).
//!
//! Use: [`PipelinedSession::submit`] a write and get its [`WriteHandle`] (the seq it was given);
//! [`PipelinedSession::poll`] or [`PipelinedSession::wait_all`] for [`Completion`]s, in whatever
//! order the cluster answers. The session retries on its own; [`PipelinedSession::disconnect`] and
//! [`PipelinedSession::resend`] let a caller drop a connection or resend writes in an order of
//! its choosing.
//!
//! Guarantees:
//! - every write takes the next seq and is (re)sent with that seq until a definite answer or its
//!   deadline ([`ClientOptions::deadline`](super::ClientOptions) after `submit`);
//! - every send carries `first_outstanding` = the lowest seq still unanswered, so the state
//!   machine keeps exactly the replies this session may still ask for, and `seq -
//!   first_outstanding` stays below the window: at most [`PIPELINE_WRITES_IN_FLIGHT_MAX`] writes
//!   are unanswered at once (`submit` refuses more with [`ClientError::WindowFull`]);
//! - a lost connection, a request timeout, `NotLeader` (followed), `ShuttingDown`: reconnect and
//!   resend every unanswered write with its seq (ascending, or the order given to `resend`); a
//!   retried write gets the reply cached by its first application. `Overloaded` /
//!   `OutcomeUnknown`: resend that write after a backoff;
//! - `SessionExpired`: every unanswered write completes — [`ClientError::OutcomeUnknown`] if it
//!   was ever sent, `Refused` if not (it was never applied) — and the next `submit` registers a
//!   new session (seqs start again at 1);
//! - a write past its deadline completes with `OutcomeUnknown` (ever sent) or `GaveUp` (never
//!   sent) and stops being outstanding, so later writes raise the floor past it: a delayed copy
//!   of it can no longer apply after them.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use super::conn::Connection;
use super::error::{AttemptLog, Failure};
use super::retry::backoff;
use super::session::{classify_write_reply, ReplyAction, SessionWrites};
use super::session::{Completion, WriteHandle, WriteOp, WriteReply};
use super::{Client, ClientError, ClientOptions};
use crate::kv::SESSION_REPLIES_MAX;
use crate::wire::{ClientRequest, ErrorReply, Frame, FrameBody};

/// Most unanswered writes of one session: the state machine's reply window, which is also the
/// server's cap on requests in flight per connection (1,024).
pub const PIPELINE_WRITES_IN_FLIGHT_MAX: usize = SESSION_REPLIES_MAX;

/// How long an address that refused a connection is not followed in a redirect. Long enough for
/// the followers of a dead leader to elect another (a few election timeouts: 150–300 ms each by
/// default); short enough that a node back up is followed again. Without a bound, a client
/// cycling through nodes whose stale hints skipped the live leader never reached it again
/// (raft-sim --membership seed 593: the marker was cleared only by connecting to that address).
pub const REFUSED_HOLD: Duration = Duration::from_secs(1);

/// True if `addr` refused a connection less than `REFUSED_HOLD` before `now`.
pub(super) fn refused_recently(unreachable: Option<&(String, Instant)>, addr: &str, now: Instant) -> bool {
    unreachable.is_some_and(|(a, at)| a == addr && now.saturating_duration_since(*at) < REFUSED_HOLD)
}

/// Writes of one session in flight on one connection. See the module doc.
pub struct PipelinedSession {
    /// Registers sessions (following the leader) and holds the options, cluster and rng.
    registrar: Client,
    /// Seqs, floors, resends and completions: the same rules the simulator runs.
    writes: SessionWrites<Instant>,
    /// Where the next connection goes: the last leader heard of.
    target: String,
    /// The last address a connection to it failed, and when; a redirect there is not followed
    /// for `REFUSED_HOLD` after (see `refused_recently`).
    unreachable: Option<(String, Instant)>,
    connection: Option<Connection>,
    /// When the current connection last delivered a frame (or was opened).
    last_progress: Instant,
    /// Request id on the current connection -> seq.
    by_request: BTreeMap<u64, u64>,
    done: Vec<Completion>,
    /// What each node said since the last definite answer (for `GaveUp`).
    log: AttemptLog,
    failures_in_a_row: u32,
    redirects_in_a_row: u32,
}

impl PipelinedSession {
    /// Registers a session with the cluster at `cluster` and keeps the connection to the leader.
    pub fn open(cluster: Vec<String>, options: ClientOptions) -> Result<PipelinedSession, ClientError> {
        let registrar = Client::new(cluster, options)?;
        let log = AttemptLog::new(registrar.cluster());
        let mut session = PipelinedSession {
            target: registrar.cluster()[registrar.cursor].clone(),
            registrar,
            writes: SessionWrites::default(),
            unreachable: None,
            connection: None,
            last_progress: Instant::now(),
            by_request: BTreeMap::new(),
            done: Vec::new(),
            log,
            failures_in_a_row: 0,
            redirects_in_a_row: 0,
        };
        session.ensure_session()?;
        Ok(session)
    }

    /// The current session's id; `None` after it expired, until the next `submit` registers.
    pub fn session_id(&self) -> Option<u64> {
        self.writes.session_id()
    }

    /// The lowest seq without a definite answer (the next seq if none is outstanding).
    pub fn first_outstanding(&self) -> u64 {
        self.writes.first_outstanding()
    }

    /// Writes submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.writes.in_flight()
    }

    /// The unanswered writes, by seq.
    pub fn unanswered(&self) -> Vec<WriteHandle> {
        self.writes.unanswered()
    }

    /// The address of the current connection, if any.
    pub fn connected_to(&self) -> Option<&str> {
        self.connection.as_ref().map(Connection::addr)
    }

    /// Takes the next seq for `op` and sends it now if connected (else on the next poll). Blocks
    /// only to register a session (the first write, or the first after the session expired), or
    /// for one backoff if the connection fails while sending.
    pub fn submit(&mut self, op: WriteOp) -> Result<WriteHandle, ClientError> {
        op.command(crate::kv::Session::serial(1, crate::kv::FIRST_SEQ))
            .validate()
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        self.writes.check_window()?;
        self.ensure_session()?;
        let now = Instant::now();
        let handle = self.writes.submit(op, now, now + self.registrar.options.deadline)?;
        self.flush_unsent(now);
        Ok(handle)
    }

    /// Waits up to `timeout` for writes to complete (retrying as needed) and returns those that
    /// did, in completion order. Returns early once something completed.
    pub fn poll(&mut self, timeout: Duration) -> Vec<Completion> {
        let until = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            self.expire(now);
            if !self.done.is_empty() || self.writes.is_empty() || now >= until {
                return std::mem::take(&mut self.done);
            }
            if self.connection.is_none() && !self.reconnect(until) {
                continue;
            }
            self.flush_unsent(now);
            let wake = self.next_wake(until);
            self.receive(wake);
        }
    }

    /// Polls until every submitted write has completed (each is bounded by its deadline).
    pub fn wait_all(&mut self) -> Vec<Completion> {
        let mut completions = std::mem::take(&mut self.done);
        while !self.writes.is_empty() {
            completions.extend(self.poll(self.registrar.options.deadline));
        }
        completions
    }

    /// Drops the connection; replies still on their way are lost. Every unanswered write is resent
    /// (with its seq) on the next connection.
    pub fn disconnect(&mut self) {
        self.connection = None;
        self.by_request.clear();
        self.writes.disconnect();
    }

    /// Sends these unanswered writes again, in this order and ahead of any other, with their seqs
    /// (now if connected, else on the next poll). Handles that already completed are skipped.
    pub fn resend(&mut self, handles: &[WriteHandle]) {
        self.writes.resend(handles);
        self.flush_unsent(Instant::now());
    }

    // ----- internals -------------------------------------------------------------------------------

    fn ensure_session(&mut self) -> Result<u64, ClientError> {
        if let Some(session_id) = self.writes.session_id() {
            return Ok(session_id);
        }
        let answer = self.registrar.register()?;
        self.writes.registered(answer.value);
        self.target = answer.addr;
        if self.connection.is_none() {
            self.connection = self.registrar.connection.take();
            self.last_progress = Instant::now();
        }
        Ok(answer.value)
    }

    /// Sends the writes whose turn it is, in queue order, each with the current floor.
    fn flush_unsent(&mut self, now: Instant) {
        for seq in self.writes.due(now) {
            let (Some(connection), Some(command)) = (self.connection.as_mut(), self.writes.command(seq)) else {
                return;
            };
            let until = now + self.registrar.options.request_timeout;
            match connection.send_request(&ClientRequest::Write(command), until) {
                Ok(request_id) => {
                    self.writes.sent(seq);
                    self.by_request.insert(request_id, seq);
                }
                Err(failure) => return self.lose_connection(failure),
            }
        }
    }

    fn next_wake(&self, until: Instant) -> Instant {
        let timeout =
            (!self.by_request.is_empty()).then(|| self.last_progress + self.registrar.options.request_timeout);
        [Some(until), self.writes.next_retry(), self.writes.earliest_deadline(), timeout]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until)
    }

    fn receive(&mut self, until: Instant) {
        let Some(connection) = self.connection.as_mut() else { return };
        match connection.next_frame(until) {
            Ok(Some(frame)) => {
                self.last_progress = Instant::now();
                self.on_frame(frame);
            }
            Ok(None) => {
                let timeout = self.registrar.options.request_timeout;
                if !self.by_request.is_empty() && self.last_progress.elapsed() >= timeout {
                    self.lose_connection(Failure::Timeout(timeout));
                }
            }
            Err(failure) => self.lose_connection(failure),
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        if frame.request_id == 0 {
            if let FrameBody::Error(ErrorReply { code, message }) = frame.body {
                self.lose_connection(Failure::Server { code, message });
            }
            return;
        }
        // A reply to a request whose write already completed (say, an earlier copy) is dropped.
        let Some(seq) = self.by_request.remove(&frame.request_id) else { return };
        if self.writes.get(seq).is_none() {
            return;
        }
        match classify_write_reply(frame.body) {
            ReplyAction::Completed(reply) => {
                self.failures_in_a_row = 0;
                self.redirects_in_a_row = 0;
                self.log = AttemptLog::new(self.registrar.cluster());
                self.complete(seq, Ok(reply));
            }
            ReplyAction::Redirect(leader_addr) => self.redirect(leader_addr),
            ReplyAction::RetryLater => {
                self.failures_in_a_row += 1;
                let pause = backoff(&mut self.registrar.rng, self.failures_in_a_row);
                self.writes.retry_later(seq, Instant::now() + pause);
            }
            ReplyAction::SessionExpired(message) => {
                let done = self.writes.session_lost(&self.target, &message);
                self.finished(done);
            }
            ReplyAction::Reconnect { code, message } => self.lose_connection(Failure::Server { code, message }),
            ReplyAction::Refused { code, message } => {
                self.complete(seq, Err(ClientError::Refused { addr: self.target.clone(), code, message }))
            }
            ReplyAction::Unexpected(what) => self.lose_connection(Failure::Unexpected(what)),
        }
    }

    /// A `NotLeader`: go to the named leader, unless it is unknown, this node, or the address that
    /// just refused a connection (a dead leader the followers still name): then try the next node.
    fn redirect(&mut self, leader_addr: String) {
        let follow = !leader_addr.is_empty()
            && leader_addr != self.target
            && !refused_recently(self.unreachable.as_ref(), &leader_addr, Instant::now());
        if !follow {
            let failure = Failure::NotLeader { leader_id: 0, leader_addr };
            return self.lose_connection(failure);
        }
        self.disconnect();
        self.target = leader_addr;
        // Two nodes naming each other (stale leader hints during an election): pause.
        self.redirects_in_a_row += 1;
        if self.redirects_in_a_row > 1 {
            self.pause();
        }
    }

    /// The connection failed: record why, back off and move to the next address.
    fn lose_connection(&mut self, failure: Failure) {
        self.log.record(&self.target, &failure);
        self.failures_in_a_row += 1;
        self.disconnect();
        self.target = self.registrar.next_address(&self.target, &[]);
        self.redirects_in_a_row = 0;
        self.pause();
    }

    /// Sleeps one backoff, never past the earliest write deadline.
    fn pause(&mut self) {
        let pause = backoff(&mut self.registrar.rng, self.failures_in_a_row.max(1));
        let earliest = self.writes.earliest_deadline();
        let pause = earliest.map_or(pause, |at| pause.min(at.saturating_duration_since(Instant::now())));
        thread::sleep(pause);
    }

    /// Opens a connection to `target`; on failure backs off (within `until`) and moves on.
    fn reconnect(&mut self, until: Instant) -> bool {
        let options = &self.registrar.options;
        let connect_until = until.min(Instant::now() + options.connect_timeout);
        match Connection::open(&self.target, options.cluster_id, options.connect_timeout, connect_until) {
            Ok(connection) => {
                if self.unreachable.as_ref().is_some_and(|(addr, _)| *addr == self.target) {
                    self.unreachable = None;
                }
                self.connection = Some(connection);
                self.last_progress = Instant::now();
                true
            }
            Err(failure) => {
                self.unreachable = Some((self.target.clone(), Instant::now()));
                self.lose_connection(failure);
                false
            }
        }
    }

    /// Completes the writes whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        for seq in self.writes.expired(now) {
            let Some(pending) = self.writes.get(seq) else { continue };
            let (op, elapsed) = (pending.op.describe(seq), now - pending.submitted);
            let error = if pending.ever_sent {
                let reason = format!("no definite answer within {:.1} s", elapsed.as_secs_f64());
                ClientError::OutcomeUnknown { op, addr: self.target.clone(), reason }
            } else {
                let (attempts, nodes) = (self.log.attempts(), self.log.clone().into_nodes());
                ClientError::GaveUp { op, needs_leader: true, elapsed, attempts, nodes, outcome_unknown: false }
            };
            self.complete(seq, Err(error));
        }
    }

    fn complete(&mut self, seq: u64, result: Result<WriteReply, ClientError>) {
        let Some(completion) = self.writes.complete(seq, result) else { return };
        // Other copies of it in flight (a resend) are answered by nobody now.
        self.by_request.retain(|_, s| *s != seq);
        self.done.push(completion);
    }

    fn finished(&mut self, done: Vec<Completion>) {
        for completion in done {
            let seq = completion.handle.seq;
            self.by_request.retain(|_, s| *s != seq);
            self.done.push(completion);
        }
    }
}

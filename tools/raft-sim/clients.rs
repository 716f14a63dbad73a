//! Simulated clients: the real client rules ([`SessionWrites`], [`classify_write_reply`]) over the
//! simulated network, in logical time, recording what they observed as a history for the
//! linearizability checker.
//!
//! Each client registers a session through the log, keeps 1 to 4 writes in flight (sets with
//! values no other write uses, compare-and-sets from what it last saw, deletes) and one
//! linearizable read. It follows `NotLeader` redirects, times out silent connections and resends
//! every unanswered write with its seq on the next connection, backs off on `Overloaded` and
//! `OutcomeUnknown`, and after `SessionExpired` records every sent write as "outcome unknown" and
//! registers a new session: exactly what `PipelinedSession` does over TCP.
//!
//! History: a write's interval runs from submit to its completion; a definite reply is `Ok`, a
//! write never sent is `Fail`, anything else `Info` (it may or may not have taken effect). A read
//! that never got an answer leaves no trace (it changed nothing).

use std::collections::BTreeMap;

use bytes::Bytes;
use mini_raft::client::session::{classify_write_reply, ReplyAction};
use mini_raft::client::{ClientError, SessionWrites, WriteOp, WriteReply};
use mini_raft::history::{CasResult, Op, OpKind, OpResult, Outcome};
use mini_raft::raft::rng::Rng;
use mini_raft::raft::NodeId;
use mini_raft::wire::{ClientReply, ClientRequest, ErrorCode, FrameBody, ReadConsistency};

use crate::net::{ConnId, Net, Payload};

/// A write gets no definite answer within this many ticks: its outcome is unknown.
const WRITE_DEADLINE_TICKS: u64 = 400;
/// A read not answered within this many ticks is abandoned.
const READ_DEADLINE_TICKS: u64 = 200;
/// A connection with requests outstanding and silent for this long is dropped.
const REQUEST_TIMEOUT_TICKS: u64 = 60;
/// `client::pipeline::REFUSED_HOLD` in ticks: a few election timeouts (15–30 ticks each).
const REFUSED_HOLD_TICKS: u64 = 100;
/// Backoff after a failure: doubles from 1 tick up to this many.
const BACKOFF_TICKS_MAX: u64 = 40;
/// Keys the clients share: few, so operations contend.
pub const KEYS: u64 = 4;

/// The simulated world as a client sees it for one step.
pub struct Ctx<'a> {
    pub rng: &'a mut Rng,
    pub net: &'a mut Net,
    pub now: u64,
    /// History time: strictly increasing over every event of the run.
    pub clock: &'a mut u64,
    pub nodes: u64,
    /// Nodes whose process runs (a connection to any other is refused).
    pub up: &'a dyn Fn(NodeId) -> bool,
}

impl Ctx<'_> {
    fn tick_clock(&mut self) -> u64 {
        *self.clock += 1;
        *self.clock
    }
}

#[derive(Clone, Copy, Debug)]
enum Req {
    Register,
    /// A write of (session, seq): a reply to a write of an expired session must not complete a
    /// write of the next session that reused its seq.
    Write {
        session: u64,
        seq: u64,
    },
    Read,
}

struct Conn {
    id: ConnId,
    node: NodeId,
    last_progress: u64,
}

struct PendingRead {
    op: usize,
    key: Bytes,
    sent: bool,
    deadline: u64,
}

#[derive(Default, Debug, Clone)]
pub struct ClientStats {
    pub registrations: u64,
    pub sessions_expired: u64,
    pub writes_ok: u64,
    pub writes_unknown: u64,
    pub reads_ok: u64,
    pub redirects: u64,
}

pub struct SimClient {
    id: usize,
    writes: SessionWrites<u64>,
    target: NodeId,
    /// The node that last refused a connection, and when (`REFUSED_HOLD_TICKS`).
    unreachable: Option<(NodeId, u64)>,
    conn: Option<Conn>,
    next_serial: u64,
    next_request_id: u64,
    by_request: BTreeMap<u64, Req>,
    register_in_flight: bool,
    backoff_until: u64,
    failures_in_a_row: u32,
    redirects_in_a_row: u32,
    /// (session, seq) -> history index.
    op_of: BTreeMap<(u64, u64), usize>,
    read: Option<PendingRead>,
    depth: usize,
    written: u64,
    /// What this client last saw under each key: the `expected` of its next compare-and-set.
    last_seen: BTreeMap<Bytes, Option<Bytes>>,
    /// Writes acknowledged `Ok` since `mark`, for the liveness check.
    pub acked_since_mark: u64,
}

/// Every client, the history they recorded, and problems that no correct server can cause.
pub struct Clients {
    pub list: Vec<SimClient>,
    /// `None`: a read that was abandoned (it leaves no trace).
    history: Vec<Option<Op>>,
    /// Per history entry: which node gave the definite answer, at which step (for reports).
    answered_by: Vec<Option<(NodeId, u64)>>,
    pub stats: ClientStats,
    pub problems: Vec<String>,
    /// Extra filler bytes per value (larger values make larger snapshots, sent in many chunks).
    value_filler: usize,
}

impl Clients {
    /// Each client's target, connection and failure counts, for a liveness report.
    pub fn describe(&self) -> Vec<String> {
        self.list
            .iter()
            .map(|c| {
                format!(
                    "c{} -> n{} conn {:?} unreachable {:?} failures {} redirects {} backoff_until {}",
                    c.id,
                    c.target,
                    c.conn.as_ref().map(|k| k.node),
                    c.unreachable,
                    c.failures_in_a_row,
                    c.redirects_in_a_row,
                    c.backoff_until
                )
            })
            .collect()
    }

    pub fn new(count: usize, nodes: u64, rng: &mut Rng, value_filler: usize) -> Clients {
        let list = (0..count)
            .map(|id| SimClient {
                id,
                writes: SessionWrites::default(),
                target: rng.range(1, nodes + 1),
                unreachable: None,
                conn: None,
                next_serial: 1,
                next_request_id: 1,
                by_request: BTreeMap::new(),
                register_in_flight: false,
                backoff_until: 0,
                failures_in_a_row: 0,
                redirects_in_a_row: 0,
                op_of: BTreeMap::new(),
                read: None,
                depth: rng.range(1, 5) as usize,
                written: 0,
                last_seen: BTreeMap::new(),
                acked_since_mark: 0,
            })
            .collect();
        Clients {
            list,
            history: Vec::new(),
            answered_by: Vec::new(),
            stats: ClientStats::default(),
            problems: Vec::new(),
            value_filler,
        }
    }

    /// The recorded history (abandoned reads left out), and for each operation the node and
    /// step of its definite answer, if any.
    pub fn history(&self) -> (Vec<Op>, Vec<Option<(NodeId, u64)>>) {
        let kept = self.history.iter().zip(&self.answered_by).filter_map(|(op, by)| op.clone().map(|op| (op, *by)));
        kept.unzip()
    }

    /// True once no client has a write or read outstanding.
    pub fn quiet(&self) -> bool {
        self.list.iter().all(|c| c.writes.is_empty() && c.read.is_none())
    }

    /// The connections clients hold to `node` (they break when it stops).
    pub fn connections_to(&self, node: NodeId) -> Vec<ConnId> {
        self.list.iter().filter_map(|c| c.conn.as_ref()).filter(|k| k.node == node).map(|k| k.id).collect()
    }

    pub fn mark(&mut self) {
        for c in &mut self.list {
            c.acked_since_mark = 0;
        }
    }

    /// One step of every client: expire, (re)connect, register, submit, send. Only the first
    /// `submitting` clients start new operations; the others finish what they have.
    pub fn act(&mut self, ctx: &mut Ctx, submitting: usize) {
        for i in 0..self.list.len() {
            self.act_one(i, ctx, i < submitting);
        }
    }

    /// Starts a linearizable read of `key` on every client that has none in flight.
    pub fn read_on_every_client(&mut self, ctx: &mut Ctx, key: u64) {
        for i in 0..self.list.len() {
            if self.list[i].read.is_none() {
                self.start_read(i, ctx, key_name(key));
            }
        }
    }

    fn act_one(&mut self, i: usize, ctx: &mut Ctx, submit: bool) {
        self.expire(i, ctx);
        let c = &mut self.list[i];
        if let Some(conn) = &c.conn {
            if !c.by_request.is_empty() && ctx.now - conn.last_progress > REQUEST_TIMEOUT_TICKS {
                self.lose_connection(i, ctx);
                return;
            }
        }
        if ctx.now < self.list[i].backoff_until {
            return;
        }
        if self.list[i].conn.is_none() && !self.connect(i, ctx) {
            return;
        }
        let c = &self.list[i];
        if c.writes.session_id().is_none() {
            // A client registers when it has writes to do (a session costs a slot of the
            // cluster's `--sessions-max`).
            if submit && !c.register_in_flight {
                self.send(i, ctx, Req::Register, ClientRequest::RegisterClient);
                self.list[i].register_in_flight = true;
            }
        } else if submit && c.writes.in_flight() < c.depth && ctx.rng.chance(1, 3) {
            self.submit_write(i, ctx);
        }
        if submit && self.list[i].read.is_none() && ctx.rng.chance(1, 6) {
            let key = key_name(ctx.rng.range(0, KEYS));
            self.start_read(i, ctx, key);
        }
        self.send_due(i, ctx);
    }

    fn connect(&mut self, i: usize, ctx: &mut Ctx) -> bool {
        let target = self.list[i].target;
        if !(ctx.up)(target) {
            self.list[i].unreachable = Some((target, ctx.now));
            self.lose_connection(i, ctx);
            return false;
        }
        let c = &mut self.list[i];
        if c.unreachable.is_some_and(|(n, _)| n == target) {
            c.unreachable = None;
        }
        let id = ConnId { client: c.id, serial: c.next_serial };
        c.next_serial += 1;
        c.conn = Some(Conn { id, node: target, last_progress: ctx.now });
        true
    }

    fn send(&mut self, i: usize, ctx: &mut Ctx, req: Req, request: ClientRequest) {
        let c = &mut self.list[i];
        let Some(conn) = &c.conn else { return };
        let request_id = c.next_request_id;
        c.next_request_id += 1;
        if c.by_request.is_empty() {
            // The silence timer starts with the first request outstanding.
            let conn_id = conn.id;
            if let Some(conn) = c.conn.as_mut().filter(|k| k.id == conn_id) {
                conn.last_progress = ctx.now;
            }
        }
        c.by_request.insert(request_id, req);
        let Some(conn) = &c.conn else { return };
        let payload = Payload::Request { conn: conn.id, node: conn.node, request_id, request };
        ctx.net.send_client(ctx.rng, ctx.now, payload);
    }

    fn submit_write(&mut self, i: usize, ctx: &mut Ctx) {
        let key = key_name(ctx.rng.range(0, KEYS));
        let c = &mut self.list[i];
        c.written += 1;
        let value = Bytes::from(format!("c{}-{}{}", c.id, c.written, "~".repeat(self.value_filler)));
        let (op, kind) = match ctx.rng.range(0, 20) {
            0..=11 => (WriteOp::Set { key: key.clone(), value: value.clone() }, OpKind::Set { value }),
            12..=16 => {
                let expected = c.last_seen.get(&key).cloned().flatten();
                let kind = OpKind::Cas { expected: expected.clone(), new: value.clone() };
                (WriteOp::Cas { key: key.clone(), expected, new: value }, kind)
            }
            _ => (WriteOp::Delete { key: key.clone() }, OpKind::Delete),
        };
        let call = ctx.tick_clock();
        let c = &mut self.list[i];
        match c.writes.submit(op, ctx.now, ctx.now + WRITE_DEADLINE_TICKS) {
            Ok(handle) => {
                let index = self.history.len();
                self.history.push(Some(Op { client: c.id as u64, key, call, ret: None, kind, outcome: Outcome::Info }));
                self.answered_by.push(None);
                c.op_of.insert((handle.session_id, handle.seq), index);
            }
            Err(e) => self.problems.push(format!("client {} could not submit a write: {e}", c.id)),
        }
    }

    fn start_read(&mut self, i: usize, ctx: &mut Ctx, key: Bytes) {
        let call = ctx.tick_clock();
        let c = &mut self.list[i];
        let op = self.history.len();
        self.answered_by.push(None);
        self.history.push(Some(Op {
            client: c.id as u64,
            key: key.clone(),
            call,
            ret: None,
            kind: OpKind::Get,
            outcome: Outcome::Info,
        }));
        c.read = Some(PendingRead { op, key, sent: false, deadline: ctx.now + READ_DEADLINE_TICKS });
    }

    fn send_due(&mut self, i: usize, ctx: &mut Ctx) {
        if self.list[i].conn.is_none() {
            return;
        }
        for seq in self.list[i].writes.due(ctx.now) {
            let Some(command) = self.list[i].writes.command(seq) else { continue };
            let session = command.session().map_or(0, |s| s.session_id);
            self.send(i, ctx, Req::Write { session, seq }, ClientRequest::Write(command));
            self.list[i].writes.sent(seq);
        }
        let read = self.list[i].read.as_ref().filter(|r| !r.sent).map(|r| r.key.clone());
        if let Some(key) = read {
            let request = ClientRequest::Get { key, consistency: ReadConsistency::Linearizable };
            self.send(i, ctx, Req::Read, request);
            if let Some(r) = self.list[i].read.as_mut() {
                r.sent = true;
            }
        }
    }

    /// A reply or a closed connection arrived for a client.
    pub fn deliver(&mut self, ctx: &mut Ctx, payload: Payload) {
        match payload {
            Payload::Reply { conn, request_id, body, .. } => {
                let i = conn.client;
                let current = self.list.get(i).and_then(|c| c.conn.as_ref()).is_some_and(|k| k.id == conn);
                if !current {
                    return; // a reply on a connection the client already dropped
                }
                if let Some(k) = self.list[i].conn.as_mut() {
                    k.last_progress = ctx.now;
                }
                let Some(req) = self.list[i].by_request.remove(&request_id) else { return };
                match req {
                    Req::Register => self.on_register_reply(i, ctx, body),
                    Req::Write { session, seq } => self.on_write_reply(i, ctx, session, seq, body),
                    Req::Read => self.on_read_reply(i, ctx, body),
                }
            }
            Payload::Closed { conn, .. } => {
                let current = self.list.get(conn.client).and_then(|c| c.conn.as_ref()).is_some_and(|k| k.id == conn);
                if current {
                    self.lose_connection(conn.client, ctx);
                }
            }
            _ => {}
        }
    }

    fn on_register_reply(&mut self, i: usize, ctx: &mut Ctx, body: FrameBody) {
        self.list[i].register_in_flight = false;
        match body {
            FrameBody::Reply(ClientReply::Registered { session_id }) => {
                if self.list[i].writes.session_id().is_none() {
                    self.list[i].writes.registered(session_id);
                    self.stats.registrations += 1;
                }
                self.succeeded(i);
            }
            FrameBody::Reply(ClientReply::NotLeader { leader_addr, .. }) => self.redirect(i, ctx, &leader_addr),
            FrameBody::Error(e) if matches!(e.code, ErrorCode::Overloaded | ErrorCode::OutcomeUnknown) => {
                self.backoff(i, ctx)
            }
            FrameBody::Error(_) => self.lose_connection(i, ctx),
            other => self.problems.push(format!("client {i}: {} in answer to RegisterClient", other.name())),
        }
    }

    fn on_write_reply(&mut self, i: usize, ctx: &mut Ctx, session: u64, seq: u64, body: FrameBody) {
        if self.list[i].writes.get(seq).is_none_or(|w| w.session_id != session) {
            return; // an earlier copy's answer, or one of an expired session: already completed
        }
        match classify_write_reply(body) {
            ReplyAction::Completed(reply) => {
                self.succeeded(i);
                let done = self.list[i].writes.complete(seq, Ok(reply));
                self.record(i, ctx, done.into_iter().collect());
            }
            ReplyAction::Redirect(leader) => self.redirect(i, ctx, &leader),
            ReplyAction::RetryLater => {
                let c = &mut self.list[i];
                c.failures_in_a_row += 1;
                let at = ctx.now + backoff_ticks(ctx.rng, c.failures_in_a_row);
                c.writes.retry_later(seq, at);
            }
            ReplyAction::SessionExpired(message) => {
                self.stats.sessions_expired += 1;
                let addr = format!("n{}", self.list[i].target);
                let done = self.list[i].writes.session_lost(&addr, &message);
                self.record(i, ctx, done);
            }
            ReplyAction::Reconnect { .. } => self.lose_connection(i, ctx),
            ReplyAction::Refused { code, message } => {
                self.problems.push(format!("client {i}: write seq {seq} refused with {code:?}: {message}"));
                let done = self.list[i].writes.complete(seq, Err(ClientError::InvalidArgument(message)));
                self.record(i, ctx, done.into_iter().collect());
            }
            ReplyAction::Unexpected(what) => self.problems.push(format!("client {i}: {what}")),
        }
    }

    fn on_read_reply(&mut self, i: usize, ctx: &mut Ctx, body: FrameBody) {
        let value = match body {
            FrameBody::Reply(ClientReply::Value(v)) => Some(v),
            FrameBody::Reply(ClientReply::NotFound) => None,
            FrameBody::Reply(ClientReply::NotLeader { leader_addr, .. }) => return self.redirect(i, ctx, &leader_addr),
            FrameBody::Error(e) if matches!(e.code, ErrorCode::Overloaded) => {
                if let Some(r) = self.list[i].read.as_mut() {
                    r.sent = false;
                }
                return self.backoff(i, ctx);
            }
            FrameBody::Error(_) => return self.lose_connection(i, ctx),
            other => return self.problems.push(format!("client {i}: {} in answer to a read", other.name())),
        };
        self.succeeded(i);
        let Some(read) = self.list[i].read.take() else { return };
        let ret = ctx.tick_clock();
        self.list[i].last_seen.insert(read.key, value.clone());
        let node = self.list[i].conn.as_ref().map_or(0, |k| k.node);
        self.answered_by[read.op] = Some((node, ctx.now));
        if let Some(Some(op)) = self.history.get_mut(read.op) {
            op.ret = Some(ret);
            op.outcome = Outcome::Ok(OpResult::Get { value });
        }
        self.stats.reads_ok += 1;
    }

    /// Writes the completions into the history.
    fn record(&mut self, i: usize, ctx: &mut Ctx, done: Vec<mini_raft::client::Completion>) {
        for completion in done {
            let handle = completion.handle;
            // Copies of it still in flight are answered by nobody now (as `PipelinedSession`).
            let this = |r: &Req| matches!(*r, Req::Write { session, seq } if (session, seq) == (handle.session_id, handle.seq));
            self.list[i].by_request.retain(|_, r| !this(r));
            let Some(index) = self.list[i].op_of.remove(&(handle.session_id, handle.seq)) else { continue };
            let ret = ctx.tick_clock();
            let node = self.list[i].conn.as_ref().map_or(0, |k| k.node);
            if completion.result.is_ok() {
                self.answered_by[index] = Some((node, ctx.now));
            }
            let Some(Some(op)) = self.history.get_mut(index) else { continue };
            let outcome = match (&op.kind, completion.result) {
                (OpKind::Set { .. }, Ok(WriteReply::Ok)) => Outcome::Ok(OpResult::Set),
                (OpKind::Delete, Ok(WriteReply::Ok)) => Outcome::Ok(OpResult::Delete { existed: true }),
                (OpKind::Delete, Ok(WriteReply::NotFound)) => Outcome::Ok(OpResult::Delete { existed: false }),
                (OpKind::Cas { .. }, Ok(WriteReply::Ok)) => Outcome::Ok(OpResult::Cas(CasResult::Ok)),
                (OpKind::Cas { .. }, Ok(WriteReply::CasFailed { current })) => {
                    Outcome::Ok(OpResult::Cas(CasResult::Failed { current }))
                }
                (_, Ok(reply)) => {
                    self.problems.push(format!("client {i}: {reply:?} in answer to a {}", op.kind.name()));
                    Outcome::Info
                }
                (_, Err(ClientError::Refused { code: ErrorCode::SessionExpired, .. })) => Outcome::Fail,
                (_, Err(ClientError::GaveUp { outcome_unknown: false, .. })) => Outcome::Fail,
                (_, Err(_)) => Outcome::Info,
            };
            match &outcome {
                Outcome::Ok(result) => {
                    self.stats.writes_ok += 1;
                    self.list[i].acked_since_mark += 1;
                    let seen = match (&op.kind, result) {
                        (OpKind::Set { value }, _) => Some(Some(value.clone())),
                        (OpKind::Delete, _) => Some(None),
                        (OpKind::Cas { new, .. }, OpResult::Cas(CasResult::Ok)) => Some(Some(new.clone())),
                        (_, OpResult::Cas(CasResult::Failed { current })) => Some(current.clone()),
                        _ => None,
                    };
                    if let Some(seen) = seen {
                        self.list[i].last_seen.insert(op.key.clone(), seen);
                    }
                }
                Outcome::Info => self.stats.writes_unknown += 1,
                Outcome::Fail => {}
            }
            op.outcome = outcome;
            op.ret = Some(ret);
        }
    }

    fn expire(&mut self, i: usize, ctx: &mut Ctx) {
        let expired = self.list[i].writes.expired(ctx.now);
        let mut done = Vec::new();
        for seq in expired {
            let Some(pending) = self.list[i].writes.get(seq) else { continue };
            let op = pending.op.describe(seq);
            let error = if pending.ever_sent {
                ClientError::OutcomeUnknown { op, addr: String::new(), reason: "deadline".into() }
            } else {
                let elapsed = std::time::Duration::ZERO;
                let (attempts, nodes, needs_leader, outcome_unknown) = (0, Vec::new(), true, false);
                ClientError::GaveUp { op, needs_leader, elapsed, attempts, nodes, outcome_unknown }
            };
            done.extend(self.list[i].writes.complete(seq, Err(error)));
        }
        self.record(i, ctx, done);
        if self.list[i].read.as_ref().is_some_and(|r| r.deadline <= ctx.now) {
            if let Some(read) = self.list[i].read.take() {
                self.history[read.op] = None;
                self.list[i].by_request.retain(|_, r| !matches!(r, Req::Read));
            }
        }
    }

    fn succeeded(&mut self, i: usize) {
        let c = &mut self.list[i];
        c.failures_in_a_row = 0;
        c.redirects_in_a_row = 0;
    }

    /// Drops the connection; every unanswered request goes again on the next one.
    fn disconnect(&mut self, i: usize) {
        let c = &mut self.list[i];
        c.conn = None;
        c.by_request.clear();
        c.register_in_flight = false;
        c.writes.disconnect();
        if let Some(r) = c.read.as_mut() {
            r.sent = false;
        }
    }

    /// `PipelinedSession::redirect`: follow a named leader unless it is unknown, the node that
    /// just said it, or the address that just refused a connection.
    fn redirect(&mut self, i: usize, ctx: &mut Ctx, leader_addr: &str) {
        self.stats.redirects += 1;
        let leader = leader_addr.strip_prefix('n').and_then(|id| id.parse::<NodeId>().ok());
        let c = &self.list[i];
        let refused = |l: NodeId| c.unreachable.is_some_and(|(n, at)| n == l && ctx.now - at < REFUSED_HOLD_TICKS);
        let follow = leader.filter(|&l| l != c.target && !refused(l));
        let Some(leader) = follow else { return self.lose_connection(i, ctx) };
        self.disconnect(i);
        let c = &mut self.list[i];
        c.target = leader;
        c.redirects_in_a_row += 1;
        if c.redirects_in_a_row > 1 {
            self.backoff(i, ctx);
        }
    }

    fn lose_connection(&mut self, i: usize, ctx: &mut Ctx) {
        self.disconnect(i);
        let c = &mut self.list[i];
        c.failures_in_a_row += 1;
        c.target = c.target % ctx.nodes + 1;
        c.redirects_in_a_row = 0;
        self.backoff(i, ctx);
    }

    fn backoff(&mut self, i: usize, ctx: &mut Ctx) {
        let c = &mut self.list[i];
        let pause = backoff_ticks(ctx.rng, c.failures_in_a_row.max(1));
        let pause = c.writes.earliest_deadline().map_or(pause, |at| pause.min(at.saturating_sub(ctx.now)));
        c.backoff_until = ctx.now + pause;
    }
}

/// Exponential backoff with jitter, in ticks (the real client: 10 ms doubling to 500 ms).
fn backoff_ticks(rng: &mut Rng, failures: u32) -> u64 {
    let max = (1u64 << failures.min(6)).min(BACKOFF_TICKS_MAX);
    rng.range(max / 2, max + 1).max(1)
}

pub fn key_name(k: u64) -> Bytes {
    Bytes::from(format!("k{k}"))
}

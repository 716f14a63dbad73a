//! [`SessionWrites`]: the bookkeeping of one session's writes, with no sockets and no clock, so
//! that [`PipelinedSession`](super::PipelinedSession) runs it over TCP and the simulator runs the
//! very same rules over its simulated network and logical time (`T` is any ordered instant).
//!
//! Rules (`protocol.md` §7.1):
//! - every write takes the next seq of the current session and keeps it for every resend;
//! - every send carries `first_outstanding` = the lowest seq still unanswered, and at most
//!   [`SESSION_REPLIES_MAX`] seqs lie in `[first_outstanding, next seq)` (`submit` refuses more);
//! - what a reply means for a write ([`classify_write_reply`]): a definite answer completes it;
//!   `NotLeader` redirects the session; `Overloaded` / `OutcomeUnknown` resend it after a backoff;
//!   `SessionExpired` completes every unanswered write (outcome unknown if it was ever sent,
//!   refused if not) and the next write registers a new session; `ShuttingDown` / `Internal`
//!   drop the connection (everything unanswered is resent elsewhere); anything else is refused;
//! - a write past its deadline completes (outcome unknown if ever sent) and stops counting as
//!   outstanding, so the next send raises the floor past it.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::{describe, ClientError};
use crate::kv::{Command, Session, FIRST_SEQ, SESSION_REPLIES_MAX};
use crate::wire::{ClientReply, ErrorCode, ErrorReply, FrameBody};

/// A write to submit; the session fills in its session id, seq and `first_outstanding`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Set {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    /// Store `new` if the value is `expected` (`None`: if the key is absent).
    Cas {
        key: Bytes,
        expected: Option<Bytes>,
        new: Bytes,
    },
}

impl WriteOp {
    /// The command this write is sent as, in `session`.
    pub fn command(&self, session: Session) -> Command {
        match self.clone() {
            WriteOp::Set { key, value } => Command::Set { session, key, value },
            WriteOp::Delete { key } => Command::Delete { session, key },
            WriteOp::Cas { key, expected, new } => Command::Cas { session, key, expected, new },
        }
    }

    pub fn key(&self) -> &Bytes {
        match self {
            WriteOp::Set { key, .. } | WriteOp::Delete { key } | WriteOp::Cas { key, .. } => key,
        }
    }

    /// E.g. `set "k" (seq 3)`, for error messages.
    pub fn describe(&self, seq: u64) -> String {
        let name = match self {
            WriteOp::Set { .. } => "set",
            WriteOp::Delete { .. } => "del",
            WriteOp::Cas { .. } => "cas",
        };
        format!("{} (seq {seq})", describe(name, self.key()))
    }
}

/// Names one submitted write: its session and seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteHandle {
    pub session_id: u64,
    pub seq: u64,
}

/// A definite answer to a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteReply {
    /// `Set`, a successful `Cas`, or `Delete` of a present key.
    Ok,
    /// `Delete` of an absent key.
    NotFound,
    /// `Cas` found `current` instead (`None`: absent).
    CasFailed { current: Option<Bytes> },
}

/// A write that is finished, one way or the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub handle: WriteHandle,
    pub result: Result<WriteReply, ClientError>,
}

/// What a reply to a write means for it (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyAction {
    /// A definite answer: complete the write.
    Completed(WriteReply),
    /// Go to this leader (empty: unknown) and resend everything unanswered there.
    Redirect(String),
    /// Resend this write after a backoff, to the same node.
    RetryLater,
    /// The session is gone (evicted, or never known): see [`SessionWrites::session_lost`].
    SessionExpired(String),
    /// Drop the connection and resend everything unanswered elsewhere.
    Reconnect { code: ErrorCode, message: String },
    /// A refusal retrying cannot fix: complete the write with it.
    Refused { code: ErrorCode, message: String },
    /// A reply that does not answer a write: the connection talks nonsense, drop it.
    Unexpected(String),
}

/// Classifies a node's reply to a write.
pub fn classify_write_reply(body: FrameBody) -> ReplyAction {
    match body {
        FrameBody::Reply(ClientReply::Ok) => ReplyAction::Completed(WriteReply::Ok),
        FrameBody::Reply(ClientReply::NotFound) => ReplyAction::Completed(WriteReply::NotFound),
        FrameBody::Reply(ClientReply::CasFailed { current }) => {
            ReplyAction::Completed(WriteReply::CasFailed { current })
        }
        FrameBody::Reply(ClientReply::NotLeader { leader_addr, .. }) => ReplyAction::Redirect(leader_addr),
        FrameBody::Error(ErrorReply { code, message }) => match code {
            ErrorCode::Overloaded | ErrorCode::OutcomeUnknown => ReplyAction::RetryLater,
            ErrorCode::SessionExpired => ReplyAction::SessionExpired(message),
            ErrorCode::ShuttingDown | ErrorCode::Internal | ErrorCode::Unknown(_) => {
                ReplyAction::Reconnect { code, message }
            }
            _ => ReplyAction::Refused { code, message },
        },
        other => ReplyAction::Unexpected(format!("{} in answer to a write", other.name())),
    }
}

/// One unanswered write.
#[derive(Clone, Debug)]
pub struct PendingWrite<T> {
    pub op: WriteOp,
    pub session_id: u64,
    pub submitted: T,
    pub deadline: T,
    pub ever_sent: bool,
    /// Not before this instant (a backoff after `Overloaded` / `OutcomeUnknown`).
    pub retry_at: Option<T>,
}

/// The writes of one session. See the module doc.
#[derive(Clone, Debug)]
pub struct SessionWrites<T> {
    session_id: Option<u64>,
    next_seq: u64,
    writes: BTreeMap<u64, PendingWrite<T>>,
    /// Seqs to send on the next chance, in order.
    unsent: VecDeque<u64>,
}

impl<T: Copy + Ord> Default for SessionWrites<T> {
    fn default() -> Self {
        SessionWrites { session_id: None, next_seq: FIRST_SEQ, writes: BTreeMap::new(), unsent: VecDeque::new() }
    }
}

impl<T: Copy + Ord> SessionWrites<T> {
    /// The current session; `None` before the first registration and after it expired.
    pub fn session_id(&self) -> Option<u64> {
        self.session_id
    }

    /// A registration answered: writes from now on belong to `session_id`, seqs from 1.
    pub fn registered(&mut self, session_id: u64) {
        debug_assert!(self.writes.is_empty(), "writes of an expired session left over");
        self.session_id = Some(session_id);
        self.next_seq = FIRST_SEQ;
    }

    /// The lowest seq without a definite answer (the next seq if none is outstanding).
    pub fn first_outstanding(&self) -> u64 {
        self.writes.keys().next().copied().unwrap_or(self.next_seq)
    }

    pub fn in_flight(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    pub fn get(&self, seq: u64) -> Option<&PendingWrite<T>> {
        self.writes.get(&seq)
    }

    /// The unanswered writes, by seq.
    pub fn unanswered(&self) -> Vec<WriteHandle> {
        self.writes.iter().map(|(&seq, w)| WriteHandle { session_id: w.session_id, seq }).collect()
    }

    /// Whether one more write fits the session's window.
    pub fn check_window(&self) -> Result<(), ClientError> {
        let first_outstanding = self.first_outstanding();
        let spread = self.next_seq - first_outstanding;
        if self.writes.len() >= SESSION_REPLIES_MAX || spread >= SESSION_REPLIES_MAX as u64 {
            return Err(ClientError::WindowFull { in_flight: self.writes.len(), first_outstanding });
        }
        Ok(())
    }

    /// Gives `op` the next seq of the current session and queues it to be sent. Refused if the
    /// command is invalid (a key or value above its limit), the window is full, or no session is
    /// registered.
    pub fn submit(&mut self, op: WriteOp, now: T, deadline: T) -> Result<WriteHandle, ClientError> {
        op.command(Session::serial(1, FIRST_SEQ))
            .validate()
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        self.check_window()?;
        let Some(session_id) = self.session_id else {
            return Err(ClientError::InvalidArgument("no session is registered".into()));
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.writes
            .insert(seq, PendingWrite { op, session_id, submitted: now, deadline, ever_sent: false, retry_at: None });
        self.unsent.push_back(seq);
        Ok(WriteHandle { session_id, seq })
    }

    /// Seqs whose turn it is to be sent, in queue order.
    pub fn due(&self, now: T) -> Vec<u64> {
        let due = |w: &PendingWrite<T>| w.retry_at.is_none_or(|at| at <= now);
        self.unsent.iter().copied().filter(|s| self.writes.get(s).is_some_and(due)).collect()
    }

    /// The command to send for `seq` now, carrying the current floor.
    pub fn command(&self, seq: u64) -> Option<Command> {
        let (session_id, pending) = (self.session_id?, self.writes.get(&seq)?);
        let first_outstanding = self.first_outstanding();
        debug_assert!(first_outstanding <= seq && seq - first_outstanding < SESSION_REPLIES_MAX as u64);
        Some(pending.op.command(Session { session_id, seq, first_outstanding }))
    }

    /// `seq` went out on the connection.
    pub fn sent(&mut self, seq: u64) {
        if let Some(pending) = self.writes.get_mut(&seq) {
            pending.ever_sent = true;
            pending.retry_at = None;
        }
        self.unsent.retain(|&s| s != seq);
    }

    /// The connection is gone: every unanswered write is resent, by seq, on the next one.
    pub fn disconnect(&mut self) {
        self.unsent = self.writes.keys().copied().collect();
    }

    /// Sends these writes again, in this order and ahead of any other.
    pub fn resend(&mut self, handles: &[WriteHandle]) {
        let mut order: Vec<u64> = Vec::with_capacity(handles.len());
        for handle in handles {
            let pending = self.writes.get_mut(&handle.seq).filter(|w| w.session_id == handle.session_id);
            if let Some(pending) = pending {
                pending.retry_at = None;
                if !order.contains(&handle.seq) {
                    order.push(handle.seq);
                }
            }
        }
        self.unsent.retain(|seq| !order.contains(seq));
        for &seq in order.iter().rev() {
            self.unsent.push_front(seq);
        }
    }

    /// Resends `seq` at `at` (after a backoff).
    pub fn retry_later(&mut self, seq: u64, at: T) {
        let Some(pending) = self.writes.get_mut(&seq) else { return };
        pending.retry_at = Some(at);
        if !self.unsent.contains(&seq) {
            self.unsent.push_back(seq);
        }
    }

    /// The earliest backoff that ends, and the earliest deadline.
    pub fn next_retry(&self) -> Option<T> {
        self.unsent.iter().filter_map(|s| self.writes.get(s)?.retry_at).min()
    }

    pub fn earliest_deadline(&self) -> Option<T> {
        self.writes.values().map(|w| w.deadline).min()
    }

    /// Completes `seq` with `result`; `None` if it already completed.
    pub fn complete(&mut self, seq: u64, result: Result<WriteReply, ClientError>) -> Option<Completion> {
        let pending = self.writes.remove(&seq)?;
        self.unsent.retain(|&s| s != seq);
        Some(Completion { handle: WriteHandle { session_id: pending.session_id, seq }, result })
    }

    /// The session is gone: no unanswered write of it can be applied any more. Each completes
    /// as outcome unknown if it was ever sent, refused if not; the next write needs a new
    /// registration.
    pub fn session_lost(&mut self, addr: &str, message: &str) -> Vec<Completion> {
        let seqs: Vec<u64> = self.writes.keys().copied().collect();
        let mut done = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let Some(pending) = self.writes.get(&seq) else { continue };
            let op = pending.op.describe(seq);
            let result = if pending.ever_sent {
                ClientError::OutcomeUnknown { op, addr: addr.to_string(), reason: message.to_string() }
            } else {
                let message = format!("{op} was never sent: the session expired first ({message})");
                ClientError::Refused { addr: addr.to_string(), code: ErrorCode::SessionExpired, message }
            };
            done.extend(self.complete(seq, Err(result)));
        }
        self.session_id = None;
        done
    }

    /// Writes whose deadline has passed by `now`, by seq (the caller completes them).
    pub fn expired(&self, now: T) -> Vec<u64> {
        self.writes.iter().filter(|(_, w)| w.deadline <= now).map(|(&s, _)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &'static str) -> WriteOp {
        WriteOp::Set { key: Bytes::from_static(key.as_bytes()), value: Bytes::from_static(b"v") }
    }

    fn floor_of(c: &Command) -> (u64, u64) {
        let s = c.session().unwrap_or(Session::serial(0, 0));
        (s.seq, s.first_outstanding)
    }

    #[test]
    fn seqs_grow_and_every_send_carries_the_lowest_unanswered() {
        let mut w: SessionWrites<u64> = SessionWrites::default();
        assert!(w.submit(set("a"), 0, 10).is_err(), "no session yet");
        w.registered(7);
        let a = w.submit(set("a"), 0, 10).unwrap();
        let b = w.submit(set("b"), 0, 10).unwrap();
        assert_eq!((a.seq, b.seq, a.session_id), (1, 2, 7));
        assert_eq!(w.due(0), vec![1, 2]);
        w.sent(1);
        w.sent(2);
        assert!(w.complete(1, Ok(WriteReply::Ok)).is_some());
        assert!(w.complete(1, Ok(WriteReply::Ok)).is_none(), "completed once");
        assert_eq!(w.command(2).map(|c| floor_of(&c)), Some((2, 2)));
        w.disconnect();
        assert_eq!(w.due(0), vec![2], "unanswered writes are resent with their seq");
    }

    #[test]
    fn a_backoff_holds_a_write_and_an_expired_session_ends_every_write() {
        let mut w: SessionWrites<u64> = SessionWrites::default();
        w.registered(3);
        w.submit(set("a"), 0, 100).unwrap();
        w.submit(set("b"), 0, 100).unwrap();
        w.sent(1);
        w.retry_later(1, 5);
        assert_eq!(w.due(4), vec![2]);
        assert_eq!(w.due(5), vec![2, 1], "a retried write goes to the back of the queue");
        let done = w.session_lost("n1", "gone");
        assert!(matches!(done[0].result, Err(ClientError::OutcomeUnknown { .. })), "sent: unknown");
        assert!(matches!(done[1].result, Err(ClientError::Refused { .. })), "never sent: refused");
        assert_eq!(w.session_id(), None);
    }

    #[test]
    fn the_window_is_bounded_by_the_session_reply_cache() {
        let mut w: SessionWrites<u64> = SessionWrites::default();
        w.registered(1);
        for _ in 0..SESSION_REPLIES_MAX {
            w.submit(set("k"), 0, 1).unwrap();
        }
        assert!(matches!(w.submit(set("k"), 0, 1), Err(ClientError::WindowFull { .. })));
        assert_eq!(w.expired(1).len(), SESSION_REPLIES_MAX);
    }

    #[test]
    fn replies_are_classified_as_the_protocol_says() {
        let err = |code| FrameBody::Error(ErrorReply::new(code, "x"));
        assert_eq!(classify_write_reply(FrameBody::Reply(ClientReply::Ok)), ReplyAction::Completed(WriteReply::Ok));
        assert_eq!(classify_write_reply(err(ErrorCode::Overloaded)), ReplyAction::RetryLater);
        assert_eq!(classify_write_reply(err(ErrorCode::OutcomeUnknown)), ReplyAction::RetryLater);
        assert!(matches!(classify_write_reply(err(ErrorCode::SessionExpired)), ReplyAction::SessionExpired(_)));
        assert!(matches!(classify_write_reply(err(ErrorCode::ShuttingDown)), ReplyAction::Reconnect { .. }));
        assert!(matches!(classify_write_reply(err(ErrorCode::StaleSequence)), ReplyAction::Refused { .. }));
        let redirect = FrameBody::Reply(ClientReply::NotLeader { leader_id: 2, leader_addr: "b".into() });
        assert_eq!(classify_write_reply(redirect), ReplyAction::Redirect("b".into()));
    }
}

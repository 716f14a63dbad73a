//! The client-session table: which writes of a session already ran, the replies they got, and
//! which session to forget when the table is full. The rules are listed in the module doc of
//! [`crate::kv`]; each one is decided here from the table and the entry alone, so every replica
//! decides the same.
//!
//! Invariants (asserted after every change):
//! - `by_activity` holds exactly one entry per session, `activity_index -> session_id`, so
//!   activity indexes are unique (one log index touches at most one session);
//! - `session_id <= activity_index` (a session is created at its own index, and activity only grows);
//! - every cached reply's seq lies in `floor_seq .. floor_seq + SESSION_REPLIES_MAX`, hence a
//!   session caches at most [`SESSION_REPLIES_MAX`] replies;
//! - for a seq at or above `floor_seq`: the write ran if and only if its reply is cached.

use std::collections::BTreeMap;

use super::{ApplyResult, Session, WriteResult, SESSION_REPLIES_MAX};
use crate::raft::Index;

/// What the store remembers about one client session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    /// Log index of the last entry that touched this session (its registration, a write that ran,
    /// or a duplicate). The session with the lowest one is evicted first.
    pub activity_index: Index,
    /// The highest `first_outstanding` any applied write of this session carried (1 at
    /// registration). Replies below it have been forgotten; writes below it are refused.
    pub floor_seq: u64,
    /// The reply of every write that ran with `seq >= floor_seq`, by seq.
    pub replies: BTreeMap<u64, WriteResult>,
}

/// What the table says about a write before it runs. Computing it changes nothing.
pub(super) enum Admission {
    /// The write has not run: run it, then [`SessionTable::record`] its result.
    Fresh,
    /// The write already ran: this is its reply; only the session's activity moves.
    Duplicate(WriteResult),
    /// The write is refused; nothing changes at all.
    Refused(ApplyResult),
}

/// Sessions by id, plus the eviction order. See the module doc for the invariants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SessionTable {
    pub(super) sessions: BTreeMap<u64, SessionState>,
    /// `activity_index -> session_id`: the first entry is the next eviction victim.
    pub(super) by_activity: BTreeMap<Index, u64>,
}

impl SessionTable {
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn get(&self, session_id: u64) -> Option<&SessionState> {
        self.sessions.get(&session_id)
    }

    /// Opens the session whose id is `index` (the index of its registration entry). First evicts
    /// the least recently active sessions until fewer than `sessions_max` remain, so that at most
    /// `sessions_max` are open afterwards. Returns how many were evicted.
    pub fn register(&mut self, index: Index, sessions_max: u32) -> usize {
        assert!(sessions_max >= 1, "a registration with sessions_max 0 passed validation");
        assert!(!self.sessions.contains_key(&index), "session {index} registered twice");
        let mut evicted = 0;
        while self.sessions.len() >= sessions_max as usize {
            let Some((_, victim)) = self.by_activity.pop_first() else { break };
            self.sessions.remove(&victim);
            evicted += 1;
        }
        let state = SessionState { activity_index: index, floor_seq: 1, replies: BTreeMap::new() };
        self.sessions.insert(index, state);
        let previous = self.by_activity.insert(index, index);
        assert!(previous.is_none(), "activity index {index} already taken");
        self.check(index);
        evicted
    }

    /// Decides what a write of `session` gets, without changing anything.
    pub fn admit(&self, session: Session) -> Admission {
        let Session { session_id, seq, first_outstanding } = session;
        let Some(state) = self.sessions.get(&session_id) else {
            return Admission::Refused(ApplyResult::SessionExpired { session_id, seq });
        };
        if seq < state.floor_seq {
            return Admission::Refused(ApplyResult::StaleSequence { session_id, seq, floor_seq: state.floor_seq });
        }
        if let Some(reply) = state.replies.get(&seq) {
            return Admission::Duplicate(reply.clone());
        }
        // The floor this write would leave behind; every cached seq must stay within the window.
        let floor_seq = state.floor_seq.max(first_outstanding);
        if seq.saturating_sub(floor_seq) >= SESSION_REPLIES_MAX as u64 {
            return Admission::Refused(ApplyResult::SessionWindowFull { session_id, seq, floor_seq });
        }
        Admission::Fresh
    }

    /// The entry at `index` touched `session_id` (a duplicate): it becomes the most recently active.
    pub fn touch(&mut self, session_id: u64, index: Index) {
        let Some(state) = self.sessions.get_mut(&session_id) else { return };
        assert!(index > state.activity_index, "activity of session {session_id} went back to {index}");
        self.by_activity.remove(&state.activity_index);
        state.activity_index = index;
        self.by_activity.insert(index, session_id);
        self.check(session_id);
    }

    /// A write admitted as [`Admission::Fresh`] ran at `index` with `result`: cache the reply,
    /// raise the floor to the write's `first_outstanding` (never lower it) and forget the replies
    /// below the floor.
    pub fn record(&mut self, session: Session, index: Index, result: WriteResult) {
        let Some(state) = self.sessions.get_mut(&session.session_id) else {
            panic!("recorded a write of unknown session {}", session.session_id);
        };
        let previous = state.replies.insert(session.seq, result);
        assert!(previous.is_none(), "session {} seq {} ran twice", session.session_id, session.seq);
        if session.first_outstanding > state.floor_seq {
            state.floor_seq = session.first_outstanding;
            state.replies = state.replies.split_off(&state.floor_seq);
        }
        self.touch(session.session_id, index);
    }

    /// Adds a session read from a snapshot image. The caller has checked the session's own
    /// fields; this checks what depends on the others (unique ids and activity indexes).
    pub fn insert_restored(&mut self, session_id: u64, state: SessionState) -> Result<(), &'static str> {
        if self.sessions.last_key_value().is_some_and(|(&last, _)| last >= session_id) {
            return Err("session ids must be strictly ascending");
        }
        if self.by_activity.contains_key(&state.activity_index) {
            return Err("two sessions have the same activity index");
        }
        self.by_activity.insert(state.activity_index, session_id);
        self.sessions.insert(session_id, state);
        self.check(session_id);
        Ok(())
    }

    fn check(&self, session_id: u64) {
        debug_assert_eq!(self.sessions.len(), self.by_activity.len());
        if let Some(state) = self.sessions.get(&session_id) {
            assert!(session_id <= state.activity_index, "session {session_id} active before it existed");
            assert_eq!(self.by_activity.get(&state.activity_index), Some(&session_id));
            assert!(state.replies.len() <= SESSION_REPLIES_MAX, "session {session_id} caches too many replies");
            let in_window = |seq: &u64| *seq >= state.floor_seq && *seq - state.floor_seq < SESSION_REPLIES_MAX as u64;
            debug_assert!(
                state.replies.keys().all(in_window),
                "session {session_id} caches a reply outside its window"
            );
        }
    }
}

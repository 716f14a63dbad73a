//! [`KvStore`]: the replicated map and the client-session table that makes writes exactly-once.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Command, KvError, Session, FIRST_SEQ, SESSIONS_MAX};
use crate::raft::Index;

/// The outcome of one write, as the client sees it. Cached per session so that a retry gets the
/// same answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// `Set` stored its value.
    Stored,
    /// `Delete` ran; `existed` says whether the key was there.
    Deleted { existed: bool },
    /// `Cas` found the expected value and stored the new one.
    CasOk,
    /// `Cas` found something else: `current` is the value it found (`None`: absent).
    CasFailed { current: Option<Bytes> },
}

/// What applying one committed entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyResult {
    /// The command ran for the first time.
    Applied(WriteResult),
    /// This (client, seq) already ran; the map is unchanged and this is the earlier result.
    Duplicate(WriteResult),
    /// The client has no session (never seen, or evicted) and `seq` is not 1: the store cannot tell
    /// whether an earlier attempt of this write ran, so it refuses it. The client must start a new
    /// session and treat the write's outcome as unknown.
    SessionExpired { client_id: u64, seq: u64 },
    /// `seq` is below the session's last applied seq: the client reused an old number. Nothing ran.
    StaleSequence { client_id: u64, seq: u64, last_seq: u64 },
    /// The payload is not a valid command. Every node rejects it the same way; nothing ran.
    Rejected(KvError),
}

/// What the store remembers about one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    /// Highest seq applied for this client.
    pub last_seq: u64,
    /// Log index of the last entry that touched this session (applied or duplicate). Eviction order.
    pub last_index: Index,
    /// The result of applying `last_seq`.
    pub last_result: WriteResult,
}

/// The key-value state machine. See the module docs for its invariants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    pub(super) data: BTreeMap<Bytes, Bytes>,
    pub(super) sessions: BTreeMap<u64, SessionState>,
    /// `last_index -> client_id` for every session: the first entry is the eviction victim.
    /// Indexes are unique because one log index touches at most one session.
    pub(super) sessions_by_index: BTreeMap<Index, u64>,
    pub(super) applied_index: Index,
}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// Index of the last entry applied (or of the snapshot restored).
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.data.get(key)
    }

    /// Every key and value, in ascending key order (for dump tools and tests).
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.data.iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn session(&self, client_id: u64) -> Option<&SessionState> {
        self.sessions.get(&client_id)
    }

    /// Applies the committed entry at `index` whose payload is `payload`. `index` must be
    /// `applied_index + 1`; otherwise `Err(IndexNotNext)` and nothing changes. A payload that does not
    /// decode still consumes the index and yields [`ApplyResult::Rejected`].
    pub fn apply(&mut self, index: Index, payload: &[u8]) -> Result<ApplyResult, KvError> {
        self.advance_to(index)?;
        match Command::decode(payload) {
            Ok(command) => Ok(self.run(index, &command)),
            Err(error) => Ok(ApplyResult::Rejected(error)),
        }
    }

    /// Applies an already-decoded command at `index` (same rules as [`KvStore::apply`]).
    pub fn apply_command(&mut self, index: Index, command: &Command) -> Result<ApplyResult, KvError> {
        if let Err(error) = command.validate() {
            self.advance_to(index)?;
            return Ok(ApplyResult::Rejected(error));
        }
        self.advance_to(index)?;
        Ok(self.run(index, command))
    }

    /// Consumes `index` for an entry that does not touch the map (a leader's no-op entry).
    pub fn apply_noop(&mut self, index: Index) -> Result<(), KvError> {
        self.advance_to(index)
    }

    fn advance_to(&mut self, index: Index) -> Result<(), KvError> {
        if self.applied_index.checked_add(1) != Some(index) {
            return Err(KvError::IndexNotNext { applied: self.applied_index, index });
        }
        self.applied_index = index;
        Ok(())
    }

    fn run(&mut self, index: Index, command: &Command) -> ApplyResult {
        let Session { client_id, seq } = command.session();
        match self.sessions.get(&client_id) {
            None if seq != FIRST_SEQ => return ApplyResult::SessionExpired { client_id, seq },
            Some(session) if seq < session.last_seq => {
                return ApplyResult::StaleSequence { client_id, seq, last_seq: session.last_seq };
            }
            Some(session) if seq == session.last_seq => {
                let cached = session.last_result.clone();
                self.touch_session(client_id, index);
                return ApplyResult::Duplicate(cached);
            }
            _ => {}
        }
        let result = self.execute(command);
        self.record_session(client_id, seq, index, result.clone());
        ApplyResult::Applied(result)
    }

    fn execute(&mut self, command: &Command) -> WriteResult {
        match command {
            Command::Set { key, value, .. } => {
                self.data.insert(key.clone(), value.clone());
                WriteResult::Stored
            }
            Command::Delete { key, .. } => WriteResult::Deleted { existed: self.data.remove(key).is_some() },
            Command::Cas { key, expected, new, .. } => {
                let current = self.data.get(key);
                if current == expected.as_ref() {
                    self.data.insert(key.clone(), new.clone());
                    WriteResult::CasOk
                } else {
                    WriteResult::CasFailed { current: current.cloned() }
                }
            }
        }
    }

    fn touch_session(&mut self, client_id: u64, index: Index) {
        if let Some(session) = self.sessions.get_mut(&client_id) {
            self.sessions_by_index.remove(&session.last_index);
            session.last_index = index;
            self.sessions_by_index.insert(index, client_id);
        }
        debug_assert_eq!(self.sessions.len(), self.sessions_by_index.len());
    }

    fn record_session(&mut self, client_id: u64, seq: u64, index: Index, result: WriteResult) {
        if let Some(old) = self.sessions.get(&client_id) {
            self.sessions_by_index.remove(&old.last_index);
        } else if self.sessions.len() >= SESSIONS_MAX {
            if let Some((_, victim)) = self.sessions_by_index.pop_first() {
                self.sessions.remove(&victim);
            }
        }
        let session = SessionState { last_seq: seq, last_index: index, last_result: result };
        self.sessions.insert(client_id, session);
        self.sessions_by_index.insert(index, client_id);
        debug_assert!(self.sessions.len() <= SESSIONS_MAX);
        debug_assert_eq!(self.sessions.len(), self.sessions_by_index.len());
    }
}

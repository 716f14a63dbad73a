//! [`KvStore`]: the replicated map and the client-session table that makes writes exactly-once.
//!
//! The map is a [`PMap`] (persistent, structurally shared), so [`KvStore::freeze`] takes a
//! consistent copy of the whole state in O(sessions), independent of the number of keys: the
//! event loop freezes, and the copy is serialized on another thread while the live store keeps
//! applying (`storage_thread.rs`). Later writes to either copy are never visible in the other.

use std::fmt;

use bytes::Bytes;

use super::sessions::{Admission, SessionTable};
use super::{Command, KvError, PMap, SessionState};
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
    /// A registration opened the session `session_id` (the entry's own index).
    Registered { session_id: u64 },
    /// The write ran for the first time.
    Applied(WriteResult),
    /// This (session, seq) already ran; nothing changed and this is the earlier result.
    Duplicate(WriteResult),
    /// The session is unknown (never registered, or evicted). The store cannot tell whether an
    /// earlier attempt of this write ran, so it refuses it, always; nothing changed. The client
    /// must register again and treat the write's outcome as unknown.
    SessionExpired { session_id: u64, seq: u64 },
    /// `seq` is below the session's floor (the highest `first_outstanding` it has seen): its reply
    /// was discarded, so the store cannot answer a retry. Nothing changed.
    StaleSequence { session_id: u64, seq: u64, floor_seq: u64 },
    /// `seq` is [`SESSION_REPLIES_MAX`](super::SESSION_REPLIES_MAX) or more above the floor the
    /// write would leave (`floor_seq`): caching it could exceed the session's window. Nothing changed.
    SessionWindowFull { session_id: u64, seq: u64, floor_seq: u64 },
    /// The payload is not a valid command. Every node rejects it the same way; nothing ran.
    Rejected(KvError),
}

/// The key-value state machine. See the module docs for its invariants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    pub(super) data: PMap<Bytes, Bytes>,
    pub(super) sessions: SessionTable,
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

    /// A frozen copy of the whole state, to serialize elsewhere. Cost: O(1) for the map (a root
    /// pointer is shared; the live store copies a leaf's path on its first write there, ~2 µs)
    /// plus a deep copy of the session table (~100 B a session: 64 sessions ≈ µs, the default
    /// cap of 10,000 ≈ 1-2 ms).
    pub fn freeze(&self) -> FrozenKv {
        FrozenKv(self.clone())
    }

    /// This store, as a [`FrozenKv`] to be dropped elsewhere (freeing a large map takes time).
    pub fn into_frozen(self) -> FrozenKv {
        FrozenKv(self)
    }

    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.data.get(key)
    }

    /// Every key and value, in ascending key order (for dump tools and tests).
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.data.iter()
    }

    /// Length of [`KvStore::snapshot`]'s image, computed without building it (O(keys)).
    pub fn image_len(&self) -> usize {
        super::snapshot::image_len(self)
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

    pub fn session(&self, session_id: u64) -> Option<&SessionState> {
        self.sessions.get(session_id)
    }

    /// Applies the committed entry at `index` whose payload is `payload`.
    ///
    /// Errors (nothing changes, the caller must stop): `index` is not `applied_index + 1`
    /// (`IndexNotNext`), or the payload is a protocol-1 write (`RetiredCommandTag`), which this
    /// version cannot apply faithfully and must not drop. Any other payload that does not decode
    /// still consumes the index and yields [`ApplyResult::Rejected`], identically on every node.
    pub fn apply(&mut self, index: Index, payload: &[u8]) -> Result<ApplyResult, KvError> {
        self.check_next(index)?;
        match Command::decode(payload) {
            Ok(command) => {
                self.applied_index = index;
                Ok(self.run(index, &command))
            }
            Err(error @ KvError::RetiredCommandTag(_)) => Err(error),
            Err(error) => {
                self.applied_index = index;
                Ok(ApplyResult::Rejected(error))
            }
        }
    }

    /// Applies an already-decoded command at `index` (same rules as [`KvStore::apply`]).
    pub fn apply_command(&mut self, index: Index, command: &Command) -> Result<ApplyResult, KvError> {
        self.check_next(index)?;
        self.applied_index = index;
        if let Err(error) = command.validate() {
            return Ok(ApplyResult::Rejected(error));
        }
        Ok(self.run(index, command))
    }

    /// Consumes `index` for an entry that does not touch the map (a leader's no-op entry). It
    /// opens no session and touches none.
    pub fn apply_noop(&mut self, index: Index) -> Result<(), KvError> {
        self.check_next(index)?;
        self.applied_index = index;
        Ok(())
    }

    fn check_next(&self, index: Index) -> Result<(), KvError> {
        if self.applied_index.checked_add(1) != Some(index) {
            return Err(KvError::IndexNotNext { applied: self.applied_index, index });
        }
        Ok(())
    }

    /// Runs a valid command at `index` (already consumed). See the module doc for the rules.
    fn run(&mut self, index: Index, command: &Command) -> ApplyResult {
        debug_assert_eq!(self.applied_index, index);
        let session = match command {
            Command::Register { sessions_max } => {
                self.sessions.register(index, *sessions_max);
                return ApplyResult::Registered { session_id: index };
            }
            Command::Set { session, .. } | Command::Delete { session, .. } | Command::Cas { session, .. } => *session,
        };
        match self.sessions.admit(session) {
            Admission::Refused(result) => result,
            Admission::Duplicate(reply) => {
                self.sessions.touch(session.session_id, index);
                ApplyResult::Duplicate(reply)
            }
            Admission::Fresh => {
                let result = self.execute(command);
                self.sessions.record(session, index, result.clone());
                ApplyResult::Applied(result)
            }
        }
    }

    fn execute(&mut self, command: &Command) -> WriteResult {
        match command {
            Command::Register { .. } => unreachable!("registrations do not touch the map"),
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
}

/// A copy of a [`KvStore`] that nothing changes any more (from [`KvStore::freeze`]): what a
/// snapshot serializes. It is `Send`, so it can be serialized and dropped on another thread (the
/// drop frees the map nodes the live store has copied away from since). `Debug` shows its size,
/// not its contents.
#[derive(Clone, PartialEq, Eq)]
pub struct FrozenKv(KvStore);

impl FrozenKv {
    pub fn applied_index(&self) -> Index {
        self.0.applied_index
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The snapshot image, byte for byte what [`KvStore::snapshot`] gives for the store it froze.
    pub fn image(&self) -> Vec<u8> {
        self.0.snapshot()
    }
}

impl fmt::Debug for FrozenKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FrozenKv {{ applied_index: {}, keys: {}, sessions: {} }}",
            self.0.applied_index,
            self.0.len(),
            self.0.session_count()
        )
    }
}

//! Commands as they are stored in a log entry's payload: a session registration or a client write.
//!
//! Layout (big-endian; `bytes` = `u32` length then the bytes; `option<bytes>` = a `u8` 0/1 then,
//! if 1, `bytes`), documented in `protocol.md` §9.1 because `raft-dump` decodes it:
//!
//! ```text
//! register: u8 tag=0x10 | u32 sessions_max
//! set:      u8 tag=0x11 | u64 session_id | u64 seq | u64 first_outstanding | bytes key | bytes value
//! delete:   u8 tag=0x12 | u64 session_id | u64 seq | u64 first_outstanding | bytes key
//! cas:      u8 tag=0x13 | u64 session_id | u64 seq | u64 first_outstanding | bytes key
//!           | option<bytes> expected | bytes new
//! ```
//!
//! The fields after a write's tag are exactly the payload of the matching client request
//! (`protocol.md` §7), and [`Command::encode_fields`] writes both. Tags `0x01..=0x03` are the
//! protocol-1 writes (random client ids, no `first_outstanding`); this version refuses them
//! ([`KvError::RetiredCommandTag`]) rather than guess what they meant.
//!
//! A decoded command always satisfies [`Command::validate`]: `session_id != 0`, `seq != 0`,
//! `1 <= first_outstanding <= seq`, `1 <= sessions_max <= SESSIONS_MAX_LIMIT`, key ≤
//! [`KEY_BYTES_MAX`], values ≤ [`VALUE_BYTES_MAX`], no trailing bytes.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes};

use super::codec::{put_bytes, put_optional_bytes, Cursor};
use super::{KvError, KEY_BYTES_MAX, SESSIONS_MAX_LIMIT, VALUE_BYTES_MAX};

/// Tag byte of an encoded session registration.
pub const COMMAND_TAG_REGISTER: u8 = 0x10;
/// Tag byte of an encoded `Set` command.
pub const COMMAND_TAG_SET: u8 = 0x11;
/// Tag byte of an encoded `Delete` command.
pub const COMMAND_TAG_DELETE: u8 = 0x12;
/// Tag byte of an encoded `Cas` (compare-and-swap) command.
pub const COMMAND_TAG_CAS: u8 = 0x13;
/// Tags of protocol-1 writes, which this version refuses to apply (see the module doc).
pub const COMMAND_TAGS_RETIRED: std::ops::RangeInclusive<u8> = 0x01..=0x03;

/// Identifies one client write for exactly-once application (Raft dissertation §6.3).
///
/// `session_id` is the log index at which the session's registration applied. A client numbers
/// its writes `seq = 1, 2, 3, ...` (gaps allowed) and reuses the same `seq` when it retries.
/// `first_outstanding` is the lowest seq for which the client has not yet received a reply; the
/// state machine may forget the replies below it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Session {
    pub session_id: u64,
    pub seq: u64,
    pub first_outstanding: u64,
}

impl Session {
    /// The session of a client with one write in flight: nothing below `seq` is outstanding.
    pub fn serial(session_id: u64, seq: u64) -> Session {
        Session { session_id, seq, first_outstanding: seq }
    }
}

/// One command of a log entry. Keys and values are `Bytes`, opaque to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Open a client session. Its id is the index of this entry; if `sessions_max` sessions are
    /// already open, the least recently active one is evicted first. The leader puts its
    /// `--sessions-max` here, so that every replica evicts by the log, not by its own flag.
    Register { sessions_max: u32 },
    /// Store `value` under `key`, replacing any previous value.
    Set { session: Session, key: Bytes, value: Bytes },
    /// Remove `key` if it exists.
    Delete { session: Session, key: Bytes },
    /// If the current value equals `expected` (`None`: the key is absent), store `new`.
    Cas { session: Session, key: Bytes, expected: Option<Bytes>, new: Bytes },
}

impl Command {
    /// The session of a write; `None` for a registration.
    pub fn session(&self) -> Option<Session> {
        match self {
            Command::Register { .. } => None,
            Command::Set { session, .. } | Command::Delete { session, .. } | Command::Cas { session, .. } => {
                Some(*session)
            }
        }
    }

    /// The key of a write; `None` for a registration.
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Command::Register { .. } => None,
            Command::Set { key, .. } | Command::Delete { key, .. } | Command::Cas { key, .. } => Some(key),
        }
    }

    /// True for `Set`, `Delete` and `Cas`: the commands a client request carries.
    pub fn is_write(&self) -> bool {
        !matches!(self, Command::Register { .. })
    }

    fn tag(&self) -> u8 {
        match self {
            Command::Register { .. } => COMMAND_TAG_REGISTER,
            Command::Set { .. } => COMMAND_TAG_SET,
            Command::Delete { .. } => COMMAND_TAG_DELETE,
            Command::Cas { .. } => COMMAND_TAG_CAS,
        }
    }

    /// Exact number of bytes [`Command::encode`] appends (the tag included).
    pub fn encoded_len(&self) -> usize {
        1 + self.fields_len()
    }

    /// Exact number of bytes [`Command::encode_fields`] appends.
    pub fn fields_len(&self) -> usize {
        let Some(key) = self.key() else { return 4 };
        let head = 8 + 8 + 8 + 4 + key.len();
        match self {
            Command::Register { .. } | Command::Delete { .. } => head,
            Command::Set { value, .. } => head + 4 + value.len(),
            Command::Cas { expected, new, .. } => {
                head + 1 + expected.as_ref().map_or(0, |e| 4 + e.len()) + 4 + new.len()
            }
        }
    }

    /// Checks the limits a decoded command satisfies. Encoders call this before they send, so an
    /// oversized command is refused at its source.
    pub fn validate(&self) -> Result<(), KvError> {
        let session = match self {
            Command::Register { sessions_max } => return validate_sessions_max(*sessions_max),
            Command::Set { session, .. } | Command::Delete { session, .. } | Command::Cas { session, .. } => session,
        };
        validate_session(session)?;
        check_len("key", self.key().map_or(0, Bytes::len), KEY_BYTES_MAX)?;
        match self {
            Command::Register { .. } | Command::Delete { .. } => Ok(()),
            Command::Set { value, .. } => check_len("value", value.len(), VALUE_BYTES_MAX),
            Command::Cas { expected, new, .. } => {
                check_len("expected", expected.as_ref().map_or(0, Bytes::len), VALUE_BYTES_MAX)?;
                check_len("new", new.len(), VALUE_BYTES_MAX)
            }
        }
    }

    /// Appends the entry-payload encoding: the tag, then [`Command::encode_fields`]. Does not
    /// validate; see [`Command::validate`].
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_u8(self.tag());
        self.encode_fields(out);
    }

    /// Appends the fields after the tag. For a write these are exactly the payload of its client
    /// request frame (`protocol.md` §7), so the wire encoder calls this too.
    pub fn encode_fields<B: BufMut>(&self, out: &mut B) {
        let session = match self {
            Command::Register { sessions_max } => return out.put_u32(*sessions_max),
            Command::Set { session, .. } | Command::Delete { session, .. } | Command::Cas { session, .. } => session,
        };
        out.put_u64(session.session_id);
        out.put_u64(session.seq);
        out.put_u64(session.first_outstanding);
        put_bytes(out, self.key().map_or(&[][..], |key| &key[..]));
        match self {
            Command::Register { .. } | Command::Delete { .. } => {}
            Command::Set { value, .. } => put_bytes(out, value),
            Command::Cas { expected, new, .. } => {
                put_optional_bytes(out, expected.as_ref());
                put_bytes(out, new);
            }
        }
    }

    /// The entry-payload encoding as a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    /// Decodes an entry payload. Never panics; copies key and value out of `payload`.
    pub fn decode(payload: &[u8]) -> Result<Command, KvError> {
        let mut cursor = Cursor::new(payload);
        let tag = cursor.u8("tag")?;
        if COMMAND_TAGS_RETIRED.contains(&tag) {
            return Err(KvError::RetiredCommandTag(tag));
        }
        let command = match tag {
            COMMAND_TAG_REGISTER => Command::Register { sessions_max: cursor.u32("sessions_max")? },
            COMMAND_TAG_SET | COMMAND_TAG_DELETE | COMMAND_TAG_CAS => decode_write(tag, &mut cursor)?,
            other => return Err(KvError::UnknownCommandTag(other)),
        };
        cursor.finish()?;
        command.validate()?;
        Ok(command)
    }
}

fn decode_write(tag: u8, cursor: &mut Cursor<'_>) -> Result<Command, KvError> {
    let session = Session {
        session_id: cursor.u64("session_id")?,
        seq: cursor.u64("seq")?,
        first_outstanding: cursor.u64("first_outstanding")?,
    };
    let key = cursor.bytes("key", KEY_BYTES_MAX)?;
    Ok(match tag {
        COMMAND_TAG_SET => Command::Set { session, key, value: cursor.bytes("value", VALUE_BYTES_MAX)? },
        COMMAND_TAG_DELETE => Command::Delete { session, key },
        _ => {
            let expected = cursor.optional_bytes("expected", VALUE_BYTES_MAX)?;
            Command::Cas { session, key, expected, new: cursor.bytes("new", VALUE_BYTES_MAX)? }
        }
    })
}

/// The session rules a write's header obeys (`protocol.md` §7.1): ids and seqs start at 1, and
/// `first_outstanding` lies in `1..=seq`. Shared with the wire decoder.
pub fn validate_session(session: &Session) -> Result<(), KvError> {
    if session.session_id == 0 {
        return Err(invalid("session_id", "0 is not a valid session id (register first)"));
    }
    if session.seq == 0 {
        return Err(invalid("seq", "sequence numbers start at 1"));
    }
    if session.first_outstanding == 0 || session.first_outstanding > session.seq {
        let reason = format!("{} is not in 1..=seq ({})", session.first_outstanding, session.seq);
        return Err(KvError::InvalidField { field: "first_outstanding".to_string(), reason });
    }
    Ok(())
}

fn validate_sessions_max(sessions_max: u32) -> Result<(), KvError> {
    if sessions_max == 0 || sessions_max > SESSIONS_MAX_LIMIT {
        let reason = format!("{sessions_max} is not in 1..={SESSIONS_MAX_LIMIT}");
        return Err(KvError::InvalidField { field: "sessions_max".to_string(), reason });
    }
    Ok(())
}

fn invalid(field: &str, reason: &str) -> KvError {
    KvError::InvalidField { field: field.to_string(), reason: reason.to_string() }
}

fn check_len(field: &str, len: usize, max: usize) -> Result<(), KvError> {
    if len > max {
        return Err(KvError::LimitExceeded { field: field.to_string(), len: len as u64, max: max as u64 });
    }
    Ok(())
}

/// Bytes of a key or value shown by [`describe_command`] before it elides the rest.
const DESCRIBE_BYTES_MAX: usize = 64;

/// One line describing an entry payload, for `raft-dump`:
/// `set session=3 seq=7 first_outstanding=7 key="foo" value="bar"`, `register sessions_max=10000`.
/// Non-printable bytes appear as `\xNN`; long values are cut after 64 bytes and followed by their
/// length. A payload that does not decode is described as `invalid command (<reason>): <length> bytes`.
pub fn describe_command(payload: &[u8]) -> String {
    match Command::decode(payload) {
        Ok(command) => command.describe(),
        Err(error) => format!("invalid command ({error}): {} bytes", payload.len()),
    }
}

impl Command {
    /// The line [`describe_command`] prints for this command.
    pub fn describe(&self) -> String {
        let (name, session, key) = match self {
            Command::Register { sessions_max } => return format!("register sessions_max={sessions_max}"),
            Command::Set { session, key, .. } => ("set", session, key),
            Command::Delete { session, key } => ("delete", session, key),
            Command::Cas { session, key, .. } => ("cas", session, key),
        };
        let mut line = format!(
            "{name} session={} seq={} first_outstanding={} key={}",
            session.session_id,
            session.seq,
            session.first_outstanding,
            quote(key)
        );
        match self {
            Command::Register { .. } | Command::Delete { .. } => {}
            Command::Set { value, .. } => {
                let _ = write!(line, " value={}", quote(value));
            }
            Command::Cas { expected, new, .. } => {
                let expected = expected.as_ref().map_or_else(|| "<absent>".to_string(), |e| quote(e));
                let _ = write!(line, " expected={expected} new={}", quote(new));
            }
        }
        line
    }
}

fn quote(bytes: &[u8]) -> String {
    let mut text = format!("\"{}\"", escape_bytes(bytes, DESCRIBE_BYTES_MAX));
    if bytes.len() > DESCRIBE_BYTES_MAX {
        let _ = write!(text, "...({} bytes)", bytes.len());
    }
    text
}

/// The first `max` bytes of `bytes`, printable ASCII as is, `"` and `\\` backslash-escaped, anything
/// else as `\xNN`. Shared by [`describe_command`] and `raft-dump` (for payloads that are no command).
pub fn escape_bytes(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let mut text = String::with_capacity(shown.len());
    for &byte in shown {
        match byte {
            b'"' => text.push_str("\\\""),
            b'\\' => text.push_str("\\\\"),
            0x20..=0x7e => text.push(byte as char),
            _ => {
                let _ = write!(text, "\\x{byte:02x}");
            }
        }
    }
    text
}

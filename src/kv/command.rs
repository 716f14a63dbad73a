//! Client write commands as they are stored in a log entry's payload.
//!
//! Layout (big-endian; `bytes` = `u32` length then the bytes; `option<bytes>` = a `u8` 0/1 then,
//! if 1, `bytes`), documented in `protocol.md` under "Log entry payloads":
//!
//! ```text
//! set:    u8 tag=0x01 | u64 client_id | u64 seq | bytes key | bytes value
//! delete: u8 tag=0x02 | u64 client_id | u64 seq | bytes key
//! cas:    u8 tag=0x03 | u64 client_id | u64 seq | bytes key | option<bytes> expected | bytes new
//! ```
//!
//! A decoded command always satisfies the limits: `client_id != 0`, `seq != 0`,
//! key ≤ [`KEY_BYTES_MAX`], values ≤ [`VALUE_BYTES_MAX`], no trailing bytes.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes};

use super::codec::{put_bytes, put_optional_bytes, Cursor};
use super::{KvError, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Tag byte of an encoded `Set` command.
pub const COMMAND_TAG_SET: u8 = 0x01;
/// Tag byte of an encoded `Delete` command.
pub const COMMAND_TAG_DELETE: u8 = 0x02;
/// Tag byte of an encoded `Cas` (compare-and-swap) command.
pub const COMMAND_TAG_CAS: u8 = 0x03;

/// Identifies one client write for exactly-once application (dissertation §6.3). A client picks a
/// fresh random non-zero `client_id` per process and numbers its writes `seq = 1, 2, 3, ...`,
/// reusing the same `seq` when it retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Session {
    pub client_id: u64,
    pub seq: u64,
}

/// One client write. Keys and values are `Bytes`, opaque to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Store `value` under `key`, replacing any previous value.
    Set { session: Session, key: Bytes, value: Bytes },
    /// Remove `key` if it exists.
    Delete { session: Session, key: Bytes },
    /// If the current value equals `expected` (`None`: the key is absent), store `new`.
    Cas { session: Session, key: Bytes, expected: Option<Bytes>, new: Bytes },
}

impl Command {
    pub fn session(&self) -> Session {
        match self {
            Command::Set { session, .. } | Command::Delete { session, .. } | Command::Cas { session, .. } => *session,
        }
    }

    pub fn key(&self) -> &Bytes {
        match self {
            Command::Set { key, .. } | Command::Delete { key, .. } | Command::Cas { key, .. } => key,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Command::Set { .. } => COMMAND_TAG_SET,
            Command::Delete { .. } => COMMAND_TAG_DELETE,
            Command::Cas { .. } => COMMAND_TAG_CAS,
        }
    }

    /// Exact number of bytes [`Command::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        let head = 1 + 8 + 8 + 4 + self.key().len();
        match self {
            Command::Set { value, .. } => head + 4 + value.len(),
            Command::Delete { .. } => head,
            Command::Cas { expected, new, .. } => {
                head + 1 + expected.as_ref().map_or(0, |e| 4 + e.len()) + 4 + new.len()
            }
        }
    }

    /// Checks the limits a decoded command satisfies. Encoders call this before they send, so an
    /// oversized command is refused at its source.
    pub fn validate(&self) -> Result<(), KvError> {
        let session = self.session();
        if session.client_id == 0 {
            return Err(invalid("client_id", "0 is not a valid client id"));
        }
        if session.seq == 0 {
            return Err(invalid("seq", "sequence numbers start at 1"));
        }
        check_len("key", self.key().len(), KEY_BYTES_MAX)?;
        match self {
            Command::Set { value, .. } => check_len("value", value.len(), VALUE_BYTES_MAX),
            Command::Delete { .. } => Ok(()),
            Command::Cas { expected, new, .. } => {
                check_len("expected", expected.as_ref().map_or(0, Bytes::len), VALUE_BYTES_MAX)?;
                check_len("new", new.len(), VALUE_BYTES_MAX)
            }
        }
    }

    /// Appends the entry-payload encoding. Does not validate; see [`Command::validate`].
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_u8(self.tag());
        let session = self.session();
        out.put_u64(session.client_id);
        out.put_u64(session.seq);
        put_bytes(out, self.key());
        match self {
            Command::Set { value, .. } => put_bytes(out, value),
            Command::Delete { .. } => {}
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
        if !matches!(tag, COMMAND_TAG_SET | COMMAND_TAG_DELETE | COMMAND_TAG_CAS) {
            return Err(KvError::UnknownCommandTag(tag));
        }
        let session = Session { client_id: cursor.u64("client_id")?, seq: cursor.u64("seq")? };
        let key = cursor.bytes("key", KEY_BYTES_MAX)?;
        let command = match tag {
            COMMAND_TAG_SET => Command::Set { session, key, value: cursor.bytes("value", VALUE_BYTES_MAX)? },
            COMMAND_TAG_DELETE => Command::Delete { session, key },
            _ => {
                let expected = cursor.optional_bytes("expected", VALUE_BYTES_MAX)?;
                Command::Cas { session, key, expected, new: cursor.bytes("new", VALUE_BYTES_MAX)? }
            }
        };
        cursor.finish()?;
        command.validate()?;
        Ok(command)
    }
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
/// `set client=3 seq=7 key="foo" value="bar"`. Non-printable bytes appear as `\xNN`; long values
/// are cut after 64 bytes and followed by their length. A payload that does not decode is described
/// as `invalid command (<reason>): <length> bytes`.
pub fn describe_command(payload: &[u8]) -> String {
    match Command::decode(payload) {
        Ok(command) => command.describe(),
        Err(error) => format!("invalid command ({error}): {} bytes", payload.len()),
    }
}

impl Command {
    /// The line [`describe_command`] prints for this command.
    pub fn describe(&self) -> String {
        let command = self;
        let session = command.session();
        let mut line = String::new();
        let name = match command {
            Command::Set { .. } => "set",
            Command::Delete { .. } => "delete",
            Command::Cas { .. } => "cas",
        };
        let _ = write!(line, "{name} client={} seq={} key={}", session.client_id, session.seq, quote(command.key()));
        match &command {
            Command::Set { value, .. } => {
                let _ = write!(line, " value={}", quote(value));
            }
            Command::Delete { .. } => {}
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

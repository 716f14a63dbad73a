//! The kv snapshot image: a deterministic byte encoding of a [`KvStore`] and its validating decoder.
//!
//! Two stores with equal contents produce identical images (keys and sessions are written in
//! ascending order), so images can be compared byte for byte across nodes. Layout, big-endian:
//!
//! ```text
//! magic "MRKV" (4) | u8 format_version = 1 | u64 applied_index
//! u64 pair_count   | pair_count × (bytes key | bytes value)        keys strictly ascending
//! u32 session_count| session_count × session                       client ids strictly ascending
//! u32 crc32        (CRC-32/IEEE of every byte before it)
//!
//! session = u64 client_id | u64 last_seq | u64 last_index | u8 result_tag | result fields
//! result_tag: 0 stored | 1 deleted (u8 existed) | 2 cas_ok | 3 cas_failed (option<bytes> current)
//! ```
//!
//! `restore` re-checks every invariant the store relies on: limits, ordering, unique session
//! indexes, `last_index <= applied_index`, and the checksum. It never panics on any input.

use bytes::BufMut;

use super::codec::{put_bytes, put_optional_bytes, Cursor, Indexed};
use super::{KvError, KvStore, SessionState, WriteResult, KEY_BYTES_MAX, SESSIONS_MAX, VALUE_BYTES_MAX};

const MAGIC: &[u8; 4] = b"MRKV";
const FORMAT_VERSION: u8 = 1;
const CRC_BYTES: usize = 4;
/// Smallest encoded pair: two empty byte strings.
const PAIR_BYTES_MIN: usize = 8;

const RESULT_STORED: u8 = 0;
const RESULT_DELETED: u8 = 1;
const RESULT_CAS_OK: u8 = 2;
const RESULT_CAS_FAILED: u8 = 3;

impl KvStore {
    /// The deterministic snapshot image of this store (see the module docs for the layout).
    pub fn snapshot(&self) -> Vec<u8> {
        let pair_bytes: usize = self.data.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(4 + 1 + 8 + 8 + pair_bytes + 4 + self.sessions.len() * 32 + CRC_BYTES);
        out.put_slice(MAGIC);
        out.put_u8(FORMAT_VERSION);
        out.put_u64(self.applied_index);
        out.put_u64(self.data.len() as u64);
        for (key, value) in &self.data {
            put_bytes(&mut out, key);
            put_bytes(&mut out, value);
        }
        debug_assert!(self.sessions.len() <= SESSIONS_MAX);
        out.put_u32(self.sessions.len() as u32);
        for (client_id, session) in &self.sessions {
            out.put_u64(*client_id);
            out.put_u64(session.last_seq);
            out.put_u64(session.last_index);
            put_result(&mut out, &session.last_result);
        }
        let crc = crc32fast::hash(&out);
        out.put_u32(crc);
        out
    }

    /// Rebuilds a store from a snapshot image, rejecting anything [`KvStore::snapshot`] could not
    /// have produced.
    pub fn restore(image: &[u8]) -> Result<KvStore, KvError> {
        if image.len() < MAGIC.len() || &image[..MAGIC.len()] != MAGIC {
            return Err(KvError::BadMagic);
        }
        let mut cursor = Cursor::new(&image[MAGIC.len()..]);
        let version = cursor.u8("format_version")?;
        if version != FORMAT_VERSION {
            return Err(KvError::UnsupportedSnapshotVersion(version));
        }
        let header_bytes = MAGIC.len() + 1;
        let Some(body_len) = image.len().checked_sub(CRC_BYTES).filter(|&n| n >= header_bytes) else {
            let left = image.len().saturating_sub(header_bytes);
            return Err(KvError::Truncated { field: "crc32".into(), needed: CRC_BYTES, left });
        };
        let (body, trailer) = image.split_at(body_len);
        let stored = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(KvError::ChecksumMismatch { stored, computed });
        }
        let mut cursor = Cursor::new(&body[header_bytes..]);
        let mut store = KvStore { applied_index: cursor.u64("applied_index")?, ..KvStore::default() };
        read_pairs(&mut cursor, &mut store)?;
        read_sessions(&mut cursor, &mut store)?;
        cursor.finish()?;
        Ok(store)
    }
}

fn read_pairs(cursor: &mut Cursor<'_>, store: &mut KvStore) -> Result<(), KvError> {
    let pair_count = cursor.u64("pair_count")?;
    let pair_count_max = (cursor.remaining() / PAIR_BYTES_MIN) as u64;
    if pair_count > pair_count_max {
        let needed = usize::try_from(pair_count.saturating_mul(PAIR_BYTES_MIN as u64)).unwrap_or(usize::MAX);
        return Err(KvError::Truncated { field: "pairs".into(), needed, left: cursor.remaining() });
    }
    for index in 0..pair_count as usize {
        let key = cursor.bytes(Indexed { list: "pairs", index, field: "key" }, KEY_BYTES_MAX)?;
        let value = cursor.bytes(Indexed { list: "pairs", index, field: "value" }, VALUE_BYTES_MAX)?;
        if let Some((last, _)) = store.data.last_key_value() {
            if *last >= key {
                return Err(invalid(Indexed { list: "pairs", index, field: "key" }, "keys are not strictly ascending"));
            }
        }
        store.data.insert(key, value);
    }
    Ok(())
}

fn read_sessions(cursor: &mut Cursor<'_>, store: &mut KvStore) -> Result<(), KvError> {
    let session_count = cursor.u32("session_count")? as usize;
    if session_count > SESSIONS_MAX {
        return Err(KvError::LimitExceeded {
            field: "session_count".into(),
            len: session_count as u64,
            max: SESSIONS_MAX as u64,
        });
    }
    for index in 0..session_count {
        let field = |name| Indexed { list: "sessions", index, field: name };
        let client_id = cursor.u64(field("client_id"))?;
        let last_seq = cursor.u64(field("last_seq"))?;
        let last_index = cursor.u64(field("last_index"))?;
        let last_result = read_result(cursor, field("result"))?;
        if client_id == 0 || store.sessions.last_key_value().is_some_and(|(last, _)| *last >= client_id) {
            return Err(invalid(field("client_id"), "client ids must be non-zero and strictly ascending"));
        }
        if last_seq == 0 {
            return Err(invalid(field("last_seq"), "sequence numbers start at 1"));
        }
        if last_index == 0 || last_index > store.applied_index || store.sessions_by_index.contains_key(&last_index) {
            return Err(invalid(field("last_index"), "must be unique and in 1..=applied_index"));
        }
        store.sessions_by_index.insert(last_index, client_id);
        store.sessions.insert(client_id, SessionState { last_seq, last_index, last_result });
    }
    Ok(())
}

fn put_result(out: &mut Vec<u8>, result: &WriteResult) {
    match result {
        WriteResult::Stored => out.put_u8(RESULT_STORED),
        WriteResult::Deleted { existed } => {
            out.put_u8(RESULT_DELETED);
            out.put_u8(u8::from(*existed));
        }
        WriteResult::CasOk => out.put_u8(RESULT_CAS_OK),
        WriteResult::CasFailed { current } => {
            out.put_u8(RESULT_CAS_FAILED);
            put_optional_bytes(out, current.as_ref());
        }
    }
}

fn read_result(cursor: &mut Cursor<'_>, field: Indexed) -> Result<WriteResult, KvError> {
    match cursor.u8(field)? {
        RESULT_STORED => Ok(WriteResult::Stored),
        RESULT_DELETED => Ok(WriteResult::Deleted { existed: cursor.bool(field)? }),
        RESULT_CAS_OK => Ok(WriteResult::CasOk),
        RESULT_CAS_FAILED => Ok(WriteResult::CasFailed { current: cursor.optional_bytes(field, VALUE_BYTES_MAX)? }),
        other => Err(invalid(field, &format!("unknown result tag {other}"))),
    }
}

fn invalid(field: Indexed, reason: &str) -> KvError {
    use super::codec::FieldName;
    KvError::InvalidField { field: field.render(), reason: reason.to_string() }
}

//! The kv snapshot image: a deterministic byte encoding of a [`KvStore`] and its validating decoder.
//!
//! Two stores with equal contents produce identical images (keys, sessions and replies are written
//! in ascending order), so images can be compared byte for byte across nodes. Layout, big-endian:
//!
//! ```text
//! magic "MRKV" (4) | u8 format_version = 2 | u64 applied_index
//! u64 pair_count   | pair_count × (bytes key | bytes value)        keys strictly ascending
//! u32 session_count| session_count × session                       session ids strictly ascending
//! u32 crc32        (CRC-32/IEEE of every byte before it)
//!
//! session = u64 session_id | u64 activity_index | u64 floor_seq
//!         | u32 reply_count | reply_count × (u64 seq | u8 result_tag | result fields)
//! result_tag: 0 stored | 1 deleted (u8 existed) | 2 cas_ok | 3 cas_failed (option<bytes> current)
//! ```
//!
//! `restore` re-checks every invariant the store relies on: limits (keys, values, at most
//! [`SESSIONS_MAX_LIMIT`] sessions, at most [`SESSION_REPLIES_MAX`] replies each), ordering,
//! `1 <= session_id <= activity_index <= applied_index`, unique activity indexes, `floor_seq >= 1`,
//! every reply's seq in `floor_seq .. floor_seq + SESSION_REPLIES_MAX`, and the checksum. It never
//! panics on any input and allocates only as the input's bytes are consumed.
//!
//! Format version 1 (protocol 1: sessions keyed by random client ids, one cached reply each) is
//! refused with [`KvError::RetiredSnapshotVersion`] rather than converted. Dropping its sessions
//! would be safe for the image alone (protocol-1 clients cannot reach a protocol-2 node), but the
//! log after such an image holds protocol-1 writes whose effect depends on those sessions (a retry
//! that protocol 1 answered from its cache must not run again), and nodes whose images cut the log
//! at different indexes would then disagree. Refusing stops the node with a message instead.

use bytes::{BufMut, Bytes};

use super::codec::{put_bytes, put_optional_bytes, Cursor, FieldName, Indexed};
use super::{
    KvError, KvStore, SessionState, WriteResult, KEY_BYTES_MAX, SESSIONS_MAX_LIMIT, SESSION_REPLIES_MAX,
    VALUE_BYTES_MAX,
};

const MAGIC: &[u8; 4] = b"MRKV";
const FORMAT_VERSION: u8 = 2;
/// Format version of protocol 1, refused (see the module doc).
const FORMAT_VERSION_RETIRED: u8 = 1;
const CRC_BYTES: usize = 4;
/// Smallest encoded pair: two empty byte strings.
const PAIR_BYTES_MIN: usize = 8;
/// Smallest encoded session: its three u64 fields and an empty reply list.
const SESSION_BYTES_MIN: usize = 8 * 3 + 4;

const RESULT_STORED: u8 = 0;
const RESULT_DELETED: u8 = 1;
const RESULT_CAS_OK: u8 = 2;
const RESULT_CAS_FAILED: u8 = 3;

impl KvStore {
    /// The deterministic snapshot image of this store (see the module docs for the layout).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(image_len(self));
        out.put_slice(MAGIC);
        out.put_u8(FORMAT_VERSION);
        out.put_u64(self.applied_index);
        out.put_u64(self.data.len() as u64);
        for (key, value) in &self.data {
            put_bytes(&mut out, key);
            put_bytes(&mut out, value);
        }
        assert!(self.sessions.len() <= SESSIONS_MAX_LIMIT as usize, "more sessions than any image may hold");
        out.put_u32(self.sessions.len() as u32);
        for (session_id, session) in &self.sessions.sessions {
            out.put_u64(*session_id);
            out.put_u64(session.activity_index);
            out.put_u64(session.floor_seq);
            out.put_u32(session.replies.len() as u32);
            for (seq, result) in &session.replies {
                out.put_u64(*seq);
                put_result(&mut out, result);
            }
        }
        let crc = crc32fast::hash(&out);
        out.put_u32(crc);
        debug_assert_eq!(out.len(), image_len(self));
        out
    }

    /// Rebuilds a store from a snapshot image, rejecting anything [`KvStore::snapshot`] could not
    /// have produced.
    pub fn restore(image: &[u8]) -> Result<KvStore, KvError> {
        if image.len() < MAGIC.len() || &image[..MAGIC.len()] != MAGIC {
            return Err(KvError::BadMagic);
        }
        let mut cursor = Cursor::new(&image[MAGIC.len()..]);
        match cursor.u8("format_version")? {
            FORMAT_VERSION => {}
            FORMAT_VERSION_RETIRED => return Err(KvError::RetiredSnapshotVersion(FORMAT_VERSION_RETIRED)),
            other => return Err(KvError::UnsupportedSnapshotVersion(other)),
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

/// The exact length of `store`'s image.
pub(super) fn image_len(store: &KvStore) -> usize {
    let pair_bytes: usize = store.data.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let session_bytes: usize = store.sessions.sessions.values().map(|s| SESSION_BYTES_MIN + reply_bytes(s)).sum();
    MAGIC.len() + 1 + 8 + 8 + pair_bytes + 4 + session_bytes + CRC_BYTES
}

fn reply_bytes(session: &SessionState) -> usize {
    let result_bytes = |result: &WriteResult| match result {
        WriteResult::Stored | WriteResult::CasOk => 1,
        WriteResult::Deleted { .. } => 2,
        WriteResult::CasFailed { current } => 2 + current.as_ref().map_or(0, |v| 4 + v.len()),
    };
    session.replies.values().map(|r| 8 + result_bytes(r)).sum()
}

fn read_pairs(cursor: &mut Cursor<'_>, store: &mut KvStore) -> Result<(), KvError> {
    let pair_count = cursor.u64("pair_count")?;
    let pair_count_max = (cursor.remaining() / PAIR_BYTES_MIN) as u64;
    if pair_count > pair_count_max {
        let needed = usize::try_from(pair_count.saturating_mul(PAIR_BYTES_MIN as u64)).unwrap_or(usize::MAX);
        return Err(KvError::Truncated { field: "pairs".into(), needed, left: cursor.remaining() });
    }
    // Collected first, then built bottom-up with full nodes (inserting ascending keys one by one
    // would leave every leaf half full). Grows only as pairs are read.
    let mut pairs: Vec<(Bytes, Bytes)> = Vec::new();
    for index in 0..pair_count as usize {
        let key = cursor.bytes(Indexed { list: "pairs", index, field: "key" }, KEY_BYTES_MAX)?;
        let value = cursor.bytes(Indexed { list: "pairs", index, field: "value" }, VALUE_BYTES_MAX)?;
        if let Some((last, _)) = pairs.last() {
            if *last >= key {
                return Err(invalid(Indexed { list: "pairs", index, field: "key" }, "keys are not strictly ascending"));
            }
        }
        pairs.push((key, value));
    }
    store.data = pairs.into_iter().collect();
    debug_assert_eq!(store.data.len() as u64, pair_count);
    Ok(())
}

fn read_sessions(cursor: &mut Cursor<'_>, store: &mut KvStore) -> Result<(), KvError> {
    let session_count = cursor.u32("session_count")?;
    if session_count > SESSIONS_MAX_LIMIT {
        let (len, max) = (u64::from(session_count), u64::from(SESSIONS_MAX_LIMIT));
        return Err(KvError::LimitExceeded { field: "session_count".into(), len, max });
    }
    if session_count as usize > cursor.remaining() / SESSION_BYTES_MIN {
        let needed = (session_count as usize).saturating_mul(SESSION_BYTES_MIN);
        return Err(KvError::Truncated { field: "sessions".into(), needed, left: cursor.remaining() });
    }
    for index in 0..session_count as usize {
        let field = |name| Indexed { list: "sessions", index, field: name };
        let session_id = cursor.u64(field("session_id"))?;
        let activity_index = cursor.u64(field("activity_index"))?;
        let floor_seq = cursor.u64(field("floor_seq"))?;
        if session_id == 0 || session_id > activity_index || activity_index > store.applied_index {
            return Err(invalid(field("activity_index"), "needs 1 <= session_id <= activity_index <= applied_index"));
        }
        if floor_seq == 0 {
            return Err(invalid(field("floor_seq"), "sequence numbers start at 1"));
        }
        let replies = read_replies(cursor, index, floor_seq)?;
        let state = SessionState { activity_index, floor_seq, replies };
        store.sessions.insert_restored(session_id, state).map_err(|reason| invalid(field("session_id"), reason))?;
    }
    Ok(())
}

/// One session's cached replies: seqs strictly ascending, all within the window above `floor_seq`.
fn read_replies(
    cursor: &mut Cursor<'_>,
    session: usize,
    floor_seq: u64,
) -> Result<std::collections::BTreeMap<u64, WriteResult>, KvError> {
    let field = |name| Indexed { list: "sessions", index: session, field: name };
    let reply_count = cursor.u32(field("reply_count"))?;
    if reply_count as usize > SESSION_REPLIES_MAX {
        let (len, max) = (u64::from(reply_count), SESSION_REPLIES_MAX as u64);
        return Err(KvError::LimitExceeded { field: field("reply_count").render(), len, max });
    }
    let mut replies = std::collections::BTreeMap::new();
    for _ in 0..reply_count {
        let seq = cursor.u64(field("replies.seq"))?;
        let result = read_result(cursor, field("replies.result"))?;
        let in_window = seq >= floor_seq && seq - floor_seq < SESSION_REPLIES_MAX as u64;
        let ascending = replies.last_key_value().is_none_or(|(&last, _)| last < seq);
        if !in_window || !ascending {
            return Err(invalid(field("replies.seq"), "reply seqs must ascend within floor_seq .. floor_seq + window"));
        }
        replies.insert(seq, result);
    }
    Ok(replies)
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
    KvError::InvalidField { field: field.render(), reason: reason.to_string() }
}

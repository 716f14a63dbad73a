//! WAL record encoding and segment scanning: pure functions over byte slices, no I/O.
//!
//! The exact layout (all integers little-endian, every record starts at an 8-byte aligned
//! offset inside its segment):
//!
//! ```text
//! offset size field
//!  0     4    payload_len   u32, bytes of payload after the 32-byte header
//!  4     4    crc           u32, CRC-32 (IEEE, crc32fast) over bytes [0,4) ++ [8, 32+payload_len)
//!  8     1    type          1 Entry, 2 HardState, 3 Truncate, 4 Compact, 5 SegmentHeader
//!  9     1    kind          EntryKind::to_u8 for Entry, 0 otherwise
//! 10     6    reserved      zero
//! 16     8    index         u64: Entry index | Truncate keep-through index | Compact snapshot index | 0
//! 24     8    term          u64: Entry term | Compact snapshot term | 0
//! 32     n    payload       Entry: the entry data; HardState: term, vote, commit (3 x u64);
//!                           Truncate, Compact: empty; SegmentHeader: see below (80 bytes)
//! 32+n   p    padding       zero bytes up to the next multiple of 8 (checked on read)
//! ```
//!
//! SegmentHeader payload: magic `b"MRWALSEG"` (8), version u32, reserved u32 = 0, seq u64,
//! prev_index u64, prev_term u64, floor_index u64, floor_term u64, hs_term u64, hs_vote u64,
//! hs_commit u64 (80 bytes: version 1), then batch_seq u64 (88 bytes: versions 2 and 3). Version 1
//! segments (no commit records) are read with the legacy rules (see `analyze`); version 2 has
//! commit records and zero-filled unwritten space; new segments are version 3: as version 2, but
//! unwritten space holds the fill pattern (`fill`), so damage is never mistaken for it.
//! `batch_seq` of a version 2/3 header is the sequence number of the last batch committed before
//! the segment was created (the first Commit record in it carries that + 1).
//!
//! Commit record (type 6, versions 2 and 3), the end of every synced batch: header
//! `index` = the log's last index after the batch, `term` = its term; payload (40 bytes):
//! batch_seq u64 (consecutive across segments), hs_term u64, hs_vote u64 (the hard state after
//! the batch), batch_offset u32 (where the batch starts in this segment), batch_len u32 (bytes
//! from batch_offset up to this record), batch_crc u32 (CRC-32 of those bytes), reserved u32 = 0.
//! A confirmation is a Commit record that closes an empty batch, written when the WAL is idle so
//! that the batch before it is known to be synced. Version 3: right after that batch
//! (`batch_len` 0, the CRC of no bytes). Version 2: at the next 4096-aligned offset, its "batch"
//! the zero gap before it (so a zeroed page could not take both; version 3 needs no gap, since a
//! zeroed page is seen as damage there, and a gap of unwritten space would look like a lost
//! sector of a torn batch).
//!
pub use super::scan::{first_nonzero, is_zero, scan, ScanEnd, TailKind};
use crate::raft::types::{EntryKind, HardState};
use byteorder::{ByteOrder, LittleEndian as LE};

/// Bytes in a record header.
pub const HEADER_LEN: usize = 32;
/// Records start at multiples of this many bytes.
pub const RECORD_ALIGN: usize = 8;
/// Largest payload any record may carry (an entry must also fit into one segment).
pub const PAYLOAD_MAX_BYTES: usize = 1 << 30;
/// Bytes of a version 1 SegmentHeader payload.
pub const SEGMENT_HEADER_V1_PAYLOAD_LEN: usize = 80;
/// Bytes of a version 2 SegmentHeader payload (what new segments get).
pub const SEGMENT_HEADER_PAYLOAD_LEN: usize = 88;
/// Bytes of a Commit payload.
pub const COMMIT_PAYLOAD_LEN: usize = 40;
/// Bytes a Commit record occupies (header + payload).
pub const COMMIT_RECORD_LEN: usize = HEADER_LEN + COMMIT_PAYLOAD_LEN;
/// Segment format written by this code: commit records, unwritten space holds the fill pattern
/// (`fill`).
pub const SEGMENT_VERSION: u32 = 3;
/// Commit records, unwritten space is zeros (still read; see `fill` for why it changed).
pub const SEGMENT_VERSION_ZERO_FILL: u32 = 2;
/// The format without batch commit records, still read.
pub const SEGMENT_VERSION_LEGACY: u32 = 1;
/// Bytes of a HardState payload.
pub const HARD_STATE_PAYLOAD_LEN: usize = 24;
const SEGMENT_MAGIC: &[u8; 8] = b"MRWALSEG";

/// The record types of the WAL. Numbers are part of the on-disk format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    Entry = 1,
    HardState = 2,
    Truncate = 3,
    Compact = 4,
    SegmentHeader = 5,
    Commit = 6,
}

impl RecordType {
    pub fn from_u8(v: u8) -> Option<RecordType> {
        match v {
            1 => Some(RecordType::Entry),
            2 => Some(RecordType::HardState),
            3 => Some(RecordType::Truncate),
            4 => Some(RecordType::Compact),
            5 => Some(RecordType::SegmentHeader),
            6 => Some(RecordType::Commit),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RecordType::Entry => "entry",
            RecordType::HardState => "hard_state",
            RecordType::Truncate => "truncate",
            RecordType::Compact => "compact",
            RecordType::SegmentHeader => "segment_header",
            RecordType::Commit => "commit",
        }
    }
}

/// The first record of every segment: where the segment sits in the log and a checkpoint of the
/// state at the moment it was created, so that older segments can be deleted freely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// SEGMENT_VERSION for new segments; SEGMENT_VERSION_ZERO_FILL or SEGMENT_VERSION_LEGACY
    /// for older ones.
    pub version: u32,
    pub seq: u64,
    /// Last log index when the segment was created; its first entry (if any) is prev_index + 1.
    pub prev_index: u64,
    pub prev_term: u64,
    pub floor_index: u64,
    pub floor_term: u64,
    pub hard_state: HardState,
    /// Version 2: sequence number of the last batch committed before this segment (0 in v1).
    pub batch_seq: u64,
}

/// The end of a synced batch (see the module doc for the layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    pub batch_seq: u64,
    /// Offset in this segment where the batch starts.
    pub batch_offset: u32,
    /// Bytes of the batch: it ends where this record starts.
    pub batch_len: u32,
    /// CRC-32 of the batch's bytes.
    pub batch_crc: u32,
    pub last_index: u64,
    pub last_term: u64,
    pub hs_term: u64,
    pub hs_vote: u64,
}

/// One decoded record. Payload slices borrow from the segment bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Entry {
        index: u64,
        term: u64,
        kind: EntryKind,
        data: &'a [u8],
    },
    HardState(HardState),
    /// Discard every entry with index > `index`.
    Truncate {
        index: u64,
    },
    /// Every entry <= `index` is folded into a snapshot whose last entry has `term`.
    Compact {
        index: u64,
        term: u64,
    },
    SegmentHeader(SegmentHeader),
    Commit(Commit),
}

impl Record<'_> {
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::Entry { .. } => RecordType::Entry,
            Record::HardState(_) => RecordType::HardState,
            Record::Truncate { .. } => RecordType::Truncate,
            Record::Compact { .. } => RecordType::Compact,
            Record::SegmentHeader(_) => RecordType::SegmentHeader,
            Record::Commit(_) => RecordType::Commit,
        }
    }
}

/// Why the bytes at an offset are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The 32 header bytes are all zero: the end of the written log.
    Zero,
    /// The record would extend past the end of the segment.
    Truncated {
        needed: usize,
        available: usize,
    },
    BadType(u8),
    BadKind(u8),
    NonZeroReserved,
    NonZeroPadding,
    BadCrc {
        stored: u32,
        computed: u32,
    },
    BadPayload(&'static str),
    /// A segment header with a valid CRC and magic, of a format this code does not know (written
    /// by a newer release): never damage, and never to be cut around.
    UnsupportedVersion(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Zero => write!(f, "zero header"),
            DecodeError::Truncated { needed, available } => {
                write!(f, "record needs {needed} bytes, only {available} left")
            }
            DecodeError::BadType(t) => write!(f, "unknown record type {t}"),
            DecodeError::BadKind(k) => write!(f, "unknown entry kind {k}"),
            DecodeError::NonZeroReserved => write!(f, "reserved header bytes are not zero"),
            DecodeError::NonZeroPadding => write!(f, "padding bytes are not zero"),
            DecodeError::BadCrc { stored, computed } => {
                write!(f, "crc mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            DecodeError::BadPayload(what) => write!(f, "bad payload: {what}"),
            DecodeError::UnsupportedVersion(v) => {
                let (lo, hi) = (SEGMENT_VERSION_LEGACY, SEGMENT_VERSION);
                write!(f, "segment format version {v} is newer than this binary reads ({lo} to {hi})")
            }
        }
    }
}

/// Rounds `n` up to a multiple of RECORD_ALIGN.
pub fn align_up(n: usize) -> usize {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Total bytes (header, payload, padding) a record with this payload occupies.
pub fn record_len(payload_len: usize) -> usize {
    align_up(HEADER_LEN + payload_len)
}

/// Computes the record CRC over a header+payload slice (`buf.len() >= HEADER_LEN`).
pub fn record_crc(buf: &[u8]) -> u32 {
    debug_assert!(buf.len() >= HEADER_LEN);
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[0..4]);
    h.update(&buf[8..]);
    h.finalize()
}

/// Writes one record at the start of `dst` and returns its length (with padding).
/// `dst` must be at least `record_len(payload.len())` bytes.
pub fn encode_raw(dst: &mut [u8], rtype: RecordType, kind: u8, index: u64, term: u64, payload: &[u8]) -> usize {
    let total = record_len(payload.len());
    assert!(payload.len() <= PAYLOAD_MAX_BYTES, "payload too large");
    assert!(dst.len() >= total, "record does not fit its destination");
    let body_end = HEADER_LEN + payload.len();
    LE::write_u32(&mut dst[0..4], payload.len() as u32);
    dst[8] = rtype as u8;
    dst[9] = kind;
    dst[10..16].fill(0);
    LE::write_u64(&mut dst[16..24], index);
    LE::write_u64(&mut dst[24..32], term);
    dst[HEADER_LEN..body_end].copy_from_slice(payload);
    dst[body_end..total].fill(0);
    let crc = record_crc(&dst[..body_end]);
    LE::write_u32(&mut dst[4..8], crc);
    total
}

/// Encodes `record` at the start of `dst`; returns the bytes used.
pub fn encode(dst: &mut [u8], record: &Record<'_>) -> usize {
    match *record {
        Record::Entry { index, term, kind, data } => {
            encode_raw(dst, RecordType::Entry, kind.to_u8(), index, term, data)
        }
        Record::HardState(hs) => {
            let p = hard_state_payload(&hs);
            encode_raw(dst, RecordType::HardState, 0, 0, 0, &p)
        }
        Record::Truncate { index } => encode_raw(dst, RecordType::Truncate, 0, index, 0, &[]),
        Record::Compact { index, term } => encode_raw(dst, RecordType::Compact, 0, index, term, &[]),
        Record::SegmentHeader(h) => {
            let p = segment_header_payload(&h);
            encode_raw(dst, RecordType::SegmentHeader, 0, 0, 0, &p[..segment_header_len(h.version)])
        }
        Record::Commit(c) => {
            let p = commit_payload(&c);
            encode_raw(dst, RecordType::Commit, 0, c.last_index, c.last_term, &p)
        }
    }
}

/// Payload bytes `record` needs (used to size the destination before `encode`).
pub fn payload_len(record: &Record<'_>) -> usize {
    match record {
        Record::Entry { data, .. } => data.len(),
        Record::HardState(_) => HARD_STATE_PAYLOAD_LEN,
        Record::Truncate { .. } | Record::Compact { .. } => 0,
        Record::SegmentHeader(h) => segment_header_len(h.version),
        Record::Commit(_) => COMMIT_PAYLOAD_LEN,
    }
}

fn segment_header_len(version: u32) -> usize {
    if version == SEGMENT_VERSION_LEGACY {
        SEGMENT_HEADER_V1_PAYLOAD_LEN
    } else {
        SEGMENT_HEADER_PAYLOAD_LEN
    }
}

/// True if segments of `version` end every batch in a Commit record (versions 2 and 3).
pub fn has_commit_records(version: u32) -> bool {
    version != SEGMENT_VERSION_LEGACY
}

/// CRC-32 of a batch's bytes, as a Commit record stores it.
pub fn batch_crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn commit_payload(c: &Commit) -> [u8; COMMIT_PAYLOAD_LEN] {
    let mut p = [0u8; COMMIT_PAYLOAD_LEN];
    LE::write_u64(&mut p[0..8], c.batch_seq);
    LE::write_u64(&mut p[8..16], c.hs_term);
    LE::write_u64(&mut p[16..24], c.hs_vote);
    LE::write_u32(&mut p[24..28], c.batch_offset);
    LE::write_u32(&mut p[28..32], c.batch_len);
    LE::write_u32(&mut p[32..36], c.batch_crc);
    p
}

fn hard_state_payload(hs: &HardState) -> [u8; HARD_STATE_PAYLOAD_LEN] {
    let mut p = [0u8; HARD_STATE_PAYLOAD_LEN];
    LE::write_u64(&mut p[0..8], hs.term);
    LE::write_u64(&mut p[8..16], hs.vote);
    LE::write_u64(&mut p[16..24], hs.commit);
    p
}

fn segment_header_payload(h: &SegmentHeader) -> [u8; SEGMENT_HEADER_PAYLOAD_LEN] {
    let mut p = [0u8; SEGMENT_HEADER_PAYLOAD_LEN];
    assert!(
        matches!(h.version, SEGMENT_VERSION_LEGACY | SEGMENT_VERSION_ZERO_FILL | SEGMENT_VERSION),
        "unknown segment version"
    );
    p[0..8].copy_from_slice(SEGMENT_MAGIC);
    LE::write_u32(&mut p[8..12], h.version);
    let fields = [
        h.seq,
        h.prev_index,
        h.prev_term,
        h.floor_index,
        h.floor_term,
        h.hard_state.term,
        h.hard_state.vote,
        h.hard_state.commit,
        h.batch_seq,
    ];
    for (i, v) in fields.iter().enumerate() {
        LE::write_u64(&mut p[16 + 8 * i..24 + 8 * i], *v);
    }
    p
}

/// A record decoded at some offset, with the bytes it occupies (header + payload + padding).
#[derive(Clone, Copy, Debug)]
pub struct Decoded<'a> {
    pub record: Record<'a>,
    pub len: usize,
    pub crc: u32,
}

/// Decodes and fully validates the record starting at `buf[off..]`.
pub fn decode(buf: &[u8], off: usize) -> Result<Decoded<'_>, DecodeError> {
    debug_assert!(off.is_multiple_of(RECORD_ALIGN));
    let available = buf.len().saturating_sub(off);
    if available < HEADER_LEN {
        if buf[off.min(buf.len())..].iter().all(|&b| b == 0) {
            return Err(DecodeError::Zero);
        }
        return Err(DecodeError::Truncated { needed: HEADER_LEN, available });
    }
    let h = &buf[off..off + HEADER_LEN];
    if is_zero(h) {
        return Err(DecodeError::Zero);
    }
    // Plausibility checks before the CRC: cheap, and they keep garbage from costing a CRC pass.
    let rtype = RecordType::from_u8(h[8]).ok_or(DecodeError::BadType(h[8]))?;
    if h[10..16].iter().any(|&b| b != 0) {
        return Err(DecodeError::NonZeroReserved);
    }
    let plen = LE::read_u32(&h[0..4]) as usize;
    let total = record_len(plen);
    if plen > PAYLOAD_MAX_BYTES || total > available {
        return Err(DecodeError::Truncated { needed: total, available });
    }
    let body = &buf[off..off + HEADER_LEN + plen];
    let stored = LE::read_u32(&h[4..8]);
    let computed = record_crc(body);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    if !is_zero(&buf[off + HEADER_LEN + plen..off + total]) {
        return Err(DecodeError::NonZeroPadding);
    }
    let record = interpret(rtype, h, &body[HEADER_LEN..])?;
    Ok(Decoded { record, len: total, crc: stored })
}

fn interpret<'a>(rtype: RecordType, h: &[u8], payload: &'a [u8]) -> Result<Record<'a>, DecodeError> {
    let kind = h[9];
    let index = LE::read_u64(&h[16..24]);
    let term = LE::read_u64(&h[24..32]);
    if rtype != RecordType::Entry && kind != 0 {
        return Err(DecodeError::BadKind(kind));
    }
    let no_index = index == 0 && term == 0;
    match rtype {
        RecordType::Entry => {
            let kind = EntryKind::from_u8(kind).ok_or(DecodeError::BadKind(kind))?;
            if index == 0 {
                return Err(DecodeError::BadPayload("entry index 0"));
            }
            Ok(Record::Entry { index, term, kind, data: payload })
        }
        RecordType::HardState => {
            if payload.len() != HARD_STATE_PAYLOAD_LEN || !no_index {
                return Err(DecodeError::BadPayload("hard state length"));
            }
            Ok(Record::HardState(HardState {
                term: LE::read_u64(&payload[0..8]),
                vote: LE::read_u64(&payload[8..16]),
                commit: LE::read_u64(&payload[16..24]),
            }))
        }
        RecordType::Truncate => {
            if !payload.is_empty() || term != 0 {
                return Err(DecodeError::BadPayload("truncate carries a payload"));
            }
            Ok(Record::Truncate { index })
        }
        RecordType::Compact => {
            if !payload.is_empty() {
                return Err(DecodeError::BadPayload("compact carries a payload"));
            }
            Ok(Record::Compact { index, term })
        }
        RecordType::SegmentHeader => decode_segment_header(payload, no_index),
        RecordType::Commit => decode_commit(payload, index, term),
    }
}

fn decode_commit(p: &[u8], index: u64, term: u64) -> Result<Record<'_>, DecodeError> {
    if p.len() != COMMIT_PAYLOAD_LEN || LE::read_u32(&p[36..40]) != 0 {
        return Err(DecodeError::BadPayload("commit record length or reserved field"));
    }
    Ok(Record::Commit(Commit {
        batch_seq: LE::read_u64(&p[0..8]),
        hs_term: LE::read_u64(&p[8..16]),
        hs_vote: LE::read_u64(&p[16..24]),
        batch_offset: LE::read_u32(&p[24..28]),
        batch_len: LE::read_u32(&p[28..32]),
        batch_crc: LE::read_u32(&p[32..36]),
        last_index: index,
        last_term: term,
    }))
}

fn decode_segment_header(p: &[u8], no_index: bool) -> Result<Record<'_>, DecodeError> {
    if p.len() < 16 || !no_index || &p[0..8] != SEGMENT_MAGIC || LE::read_u32(&p[12..16]) != 0 {
        return Err(DecodeError::BadPayload("segment header magic"));
    }
    let version = LE::read_u32(&p[8..12]);
    let known = matches!(version, SEGMENT_VERSION_LEGACY | SEGMENT_VERSION_ZERO_FILL | SEGMENT_VERSION);
    if !known && version > SEGMENT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let ok = known && p.len() == segment_header_len(version);
    if !ok {
        return Err(DecodeError::BadPayload("segment header version or length"));
    }
    let f = |i: usize| LE::read_u64(&p[16 + 8 * i..24 + 8 * i]);
    Ok(Record::SegmentHeader(SegmentHeader {
        version,
        seq: f(0),
        prev_index: f(1),
        prev_term: f(2),
        floor_index: f(3),
        floor_term: f(4),
        hard_state: HardState { term: f(5), vote: f(6), commit: f(7) },
        batch_seq: if has_commit_records(version) { f(8) } else { 0 },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, data: &[u8]) -> Record<'_> {
        Record::Entry { index, term: 7, kind: EntryKind::Normal, data }
    }

    #[test]
    fn every_record_type_round_trips() {
        let hs = HardState { term: 3, vote: 2, commit: 9 };
        let header = SegmentHeader {
            version: SEGMENT_VERSION,
            seq: 4,
            prev_index: 10,
            prev_term: 2,
            floor_index: 5,
            floor_term: 1,
            hard_state: hs,
            batch_seq: 17,
        };
        let legacy = SegmentHeader { version: SEGMENT_VERSION_LEGACY, batch_seq: 0, ..header };
        let commit = Commit {
            batch_seq: 9,
            batch_offset: 120,
            batch_len: 4000,
            batch_crc: 0xdead_beef,
            last_index: 12,
            last_term: 3,
            hs_term: 3,
            hs_vote: 2,
        };
        let records = [
            entry(1, b"hello"),
            entry(2, b""),
            Record::HardState(hs),
            Record::Truncate { index: 3 },
            Record::Compact { index: 8, term: 2 },
            Record::SegmentHeader(header),
            Record::SegmentHeader(legacy),
            Record::Commit(commit),
        ];
        for r in records {
            let mut buf = vec![0u8; 256];
            let n = encode(&mut buf, &r);
            assert_eq!(n, record_len(payload_len(&r)));
            let d = decode(&buf, 0).expect("decodes");
            assert_eq!(d.record, r);
            assert_eq!(d.len, n);
        }
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let mut buf = vec![0u8; 128];
        let n = encode(&mut buf, &entry(5, b"some payload bytes"));
        for bit in 0..n * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&b, 0).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn scan_classifies_zero_torn_and_hole() {
        let mut buf = vec![0u8; 1024];
        let a = encode(&mut buf, &entry(1, b"aaaa"));
        let b = encode(&mut buf[a..], &entry(2, b"bbbb"));
        let end = scan::<()>(&buf, 0, |_, _| Ok(())).unwrap();
        assert_eq!(end.end, a + b);
        assert_eq!(end.tail, TailKind::Clean);

        let mut torn = buf.clone();
        torn[a + 33] ^= 1;
        let end = scan::<()>(&torn, 0, |_, _| Ok(())).unwrap();
        assert_eq!(end.end, a);
        assert!(matches!(end.tail, TailKind::Torn { dirty_end, .. } if dirty_end == a + b - 4));

        let mut hole = buf.clone();
        hole[3] ^= 0x10;
        let end = scan::<()>(&hole, 0, |_, _| Ok(())).unwrap();
        assert_eq!(end.end, 0);
        assert!(matches!(end.tail, TailKind::Hole { valid_at, .. } if valid_at == a));
    }
}

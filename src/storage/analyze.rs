//! Judging a segment image at recovery: which records recovery keeps, and whether what follows
//! them is clean, a torn (never-synced) final batch, or damaged synced data. Pure functions over
//! byte slices, shared by `Wal::open` and `raft-dump --verify`. The rules and the argument for
//! them are in the `wal` module doc; this file implements them:
//!
//! Version 2 segments:
//! 1. Walk the record chain from the header. Records are buffered per batch and handed to `apply`
//!    only when the batch's Commit record validates (record CRC, batch offset = end of the
//!    previous batch, length, batch CRC over the bytes, sequence number = previous + 1). A run of
//!    zeros up to the next 4096 boundary (as short as 8 bytes: shorter than a record header)
//!    followed by a Commit record whose batch is exactly that run is a confirmation (see
//!    `Wal::confirm_if_idle`). `keep_end` is the end of the last validated Commit: recovery
//!    keeps exactly `[0, keep_end)`.
//! 2. If any Commit record that validates on its own (record CRC and batch CRC over its stated
//!    batch) lies after `keep_end`, the chain break before it is damage in synced data:
//!    `Corrupt` at the break.
//! 3. Otherwise, if non-zero bytes follow `keep_end`: in a segment that is not the newest that is
//!    `Corrupt` (it was synced completely before its successor was created); in the newest it is
//!    the final batch, `Torn` if a crash can explain it and `Corrupt` if not (`crash_consistent`).
//!
//! Version 1 segments (no commit records): today's rules, by `scan`'s tail classification.

use super::record::{self, decode, Commit, DecodeError, Decoded, Record, HEADER_LEN, RECORD_ALIGN};
use super::scan::{first_nonzero, is_zero, TailKind};
use byteorder::{ByteOrder, LittleEndian as LE};

/// Sector size a power loss writes atomically.
const SECTOR: usize = super::fs::SECTOR_BYTES as usize;
/// Alignment of confirmation records.
pub const CONFIRM_ALIGN: usize = super::fs::PAGE_BYTES as usize;

/// What follows the records recovery keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Only zeros follow `keep_end`.
    Clean,
    /// The final batch never completed its sync: `[keep_end, dirty_end)` is dropped.
    Torn { reason: String },
    /// Synced data is damaged at `at` (>= keep_end); everything from `keep_end` on is lost.
    Corrupt { at: usize, reason: String },
}

/// The judgement of one segment image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Analysis {
    pub version: u32,
    /// One past the last record recovery keeps.
    pub keep_end: usize,
    /// One past the last non-zero byte of the image.
    pub dirty_end: usize,
    /// Sequence number of the last kept batch (v2; the header's `batch_seq` if none).
    pub batch_seq: u64,
    pub verdict: Verdict,
}

/// `apply` refused the record at `offset` (valid CRC, inconsistent content). Recovery reruns the
/// analysis with `stop_at = Some(batch_start)`, so the log ends before that batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyError {
    pub offset: usize,
    pub batch_start: usize,
    pub reason: String,
}

/// The callback that receives each kept record (header first) in order.
pub type Apply<'f> = dyn FnMut(usize, &Record<'_>) -> Result<(), String> + 'f;

/// One past the last non-zero byte of `buf` (0 if all zero).
pub fn dirty_end(buf: &[u8]) -> usize {
    let mut end = buf.len();
    while end > 0 {
        let start = end.saturating_sub(4096);
        if !is_zero(&buf[start..end]) {
            return start + buf[start..end].iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        }
        end = start;
    }
    0
}

/// True if `c`, found at `at`, describes exactly the bytes before it and their CRC matches.
pub fn commit_validates(buf: &[u8], at: usize, c: &Commit) -> bool {
    let start = c.batch_offset as usize;
    start.checked_add(c.batch_len as usize) == Some(at) && record::batch_crc(&buf[start..at]) == c.batch_crc
}

/// Every valid record in `[from, to)`: the chain from `from`, re-synchronized after each invalid
/// stretch at the next 8-aligned offset that can hold a header (a valid header has a non-zero
/// byte among its first 16). Calls `f(offset, decoded)` in offset order.
pub fn for_each_valid<'a>(buf: &'a [u8], from: usize, to: usize, f: &mut dyn FnMut(usize, &Decoded<'a>)) {
    let to = to.min(buf.len());
    let mut pos = from;
    while pos < to {
        if let Ok(d) = decode(buf, pos) {
            f(pos, &d);
            pos += d.len;
            continue;
        }
        let Some(q) = first_nonzero(buf, pos + RECORD_ALIGN) else { return };
        if q >= to {
            return;
        }
        let lowest = record::align_up((q + 1).saturating_sub(16));
        pos = lowest.max(pos + RECORD_ALIGN);
    }
}

/// Judges a segment image. `is_newest`: only the newest segment may end in a torn batch.
/// `stop_at`: treat the chain as broken at this batch boundary (after an `ApplyError`).
pub fn analyze(
    buf: &[u8],
    is_newest: bool,
    stop_at: Option<(usize, String)>,
    apply: &mut Apply<'_>,
) -> Result<Analysis, ApplyError> {
    let dirty = dirty_end(buf);
    let (header, header_len) = match decode(buf, 0) {
        Ok(d) => match d.record {
            Record::SegmentHeader(h) => {
                if let Err(reason) = apply(0, &d.record) {
                    return Ok(broken_header(dirty, reason));
                }
                (h, d.len)
            }
            _ => return Ok(broken_header(dirty, "the first record is not a segment header".into())),
        },
        Err(e) => return Ok(broken_header(dirty, format!("bad segment header: {e}"))),
    };
    if header.version == record::SEGMENT_VERSION_LEGACY {
        return analyze_legacy(buf, header_len, is_newest, stop_at, apply);
    }
    let walk = walk_chain(buf, header_len, header.batch_seq, dirty, stop_at, apply)?;
    let verdict = judge_rest(buf, &walk, dirty, is_newest);
    Ok(Analysis { version: header.version, keep_end: walk.keep_end, dirty_end: dirty, batch_seq: walk.seq, verdict })
}

fn broken_header(dirty: usize, reason: String) -> Analysis {
    Analysis { version: 0, keep_end: 0, dirty_end: dirty, batch_seq: 0, verdict: Verdict::Corrupt { at: 0, reason } }
}

/// Where the chain walk of a version 2 segment stopped.
struct Walk {
    keep_end: usize,
    seq: u64,
    /// First offset at or after `keep_end` where the chain is broken, and why (None: zeros).
    damage: Option<(usize, String)>,
    /// The break was imposed by `stop_at`.
    forced: bool,
}

fn walk_chain(
    buf: &[u8],
    start: usize,
    header_seq: u64,
    dirty: usize,
    stop_at: Option<(usize, String)>,
    apply: &mut Apply<'_>,
) -> Result<Walk, ApplyError> {
    let (mut pos, mut batch_start, mut seq) = (start, start, header_seq);
    let mut batch: Vec<(usize, Decoded<'_>)> = Vec::new();
    loop {
        if let Some((s, why)) = stop_at.as_ref().filter(|(s, _)| batch_start >= *s) {
            debug_assert_eq!(batch_start, *s, "stop_at must be a batch boundary");
            return Ok(Walk { keep_end: batch_start, seq, damage: Some((*s, why.clone())), forced: true });
        }
        if pos >= buf.len() {
            return Ok(Walk { keep_end: batch_start, seq, damage: None, forced: false });
        }
        let d = match decode(buf, pos) {
            Ok(d) => d,
            Err(DecodeError::Zero) if pos >= dirty => {
                return Ok(Walk { keep_end: batch_start, seq, damage: None, forced: false })
            }
            // Zeros up to a page boundary, then a confirmation. The gap may be shorter than a record
            // header (8, 16 or 24 bytes), and then the header read here overlaps the confirmation:
            // any decode error is checked for one (`confirmation_at` demands an all-zero gap).
            Err(e) => match confirmation_at(buf, pos, batch_start, seq) {
                Some((at, d)) => {
                    apply_batch(&mut batch, (at, d), batch_start, apply)?;
                    seq += 1;
                    pos = at + d.len;
                    batch_start = pos;
                    continue;
                }
                None if e == DecodeError::Zero => {
                    return Ok(broken(batch_start, seq, pos, "zeros inside the log".into()))
                }
                None => return Ok(broken(batch_start, seq, pos, e.to_string())),
            },
        };
        match d.record {
            Record::Commit(c) => {
                if let Err(why) = check_commit(buf, pos, &c, batch_start, seq) {
                    return Ok(broken(batch_start, seq, pos, why));
                }
                apply_batch(&mut batch, (pos, d), batch_start, apply)?;
                seq += 1;
                pos += d.len;
                batch_start = pos;
            }
            Record::SegmentHeader(_) => {
                return Ok(broken(batch_start, seq, pos, "a segment header inside the segment".into()));
            }
            _ => {
                batch.push((pos, d));
                pos += d.len;
            }
        }
    }
}

fn broken(keep_end: usize, seq: u64, at: usize, why: String) -> Walk {
    Walk { keep_end, seq, damage: Some((at, why)), forced: false }
}

/// Checks a Commit found in the chain against the batch it closes.
fn check_commit(buf: &[u8], at: usize, c: &Commit, batch_start: usize, seq: u64) -> Result<(), String> {
    if c.batch_offset as usize != batch_start || c.batch_len as usize != at - batch_start {
        return Err(format!(
            "commit record covers [{}, +{}) but its batch starts at {batch_start}",
            c.batch_offset, c.batch_len
        ));
    }
    if c.batch_seq != seq + 1 {
        return Err(format!("commit record has batch {} after batch {seq}", c.batch_seq));
    }
    if !commit_validates(buf, at, c) {
        return Err("batch crc mismatch: the batch's bytes are not what was synced".into());
    }
    Ok(())
}

/// A confirmation at the next 4096 boundary after `pos` whose batch is the zero gap `[pos, at)`.
fn confirmation_at<'a>(buf: &'a [u8], pos: usize, batch_start: usize, seq: u64) -> Option<(usize, Decoded<'a>)> {
    let at = pos.div_ceil(CONFIRM_ALIGN) * CONFIRM_ALIGN;
    if batch_start != pos || at == pos || at >= buf.len() || !is_zero(&buf[pos..at]) {
        return None;
    }
    let d = decode(buf, at).ok()?;
    match d.record {
        Record::Commit(c) if check_commit(buf, at, &c, batch_start, seq).is_ok() => Some((at, d)),
        _ => None,
    }
}

fn apply_batch<'a>(
    batch: &mut Vec<(usize, Decoded<'a>)>,
    commit: (usize, Decoded<'a>),
    batch_start: usize,
    apply: &mut Apply<'_>,
) -> Result<(), ApplyError> {
    batch.push(commit);
    for (offset, d) in batch.drain(..) {
        apply(offset, &d.record).map_err(|reason| ApplyError { offset, batch_start, reason })?;
    }
    Ok(())
}

/// Steps 2 and 3 of the module doc.
fn judge_rest(buf: &[u8], walk: &Walk, dirty: usize, is_newest: bool) -> Verdict {
    if let Some((at, why)) = walk.damage.as_ref().filter(|_| walk.forced) {
        return Verdict::Corrupt { at: *at, reason: why.clone() };
    }
    let mut last_valid_commit = None;
    for_each_valid(buf, walk.keep_end, dirty, &mut |at, d| {
        if let Record::Commit(c) = d.record {
            if commit_validates(buf, at, &c) {
                last_valid_commit = Some(at);
            }
        }
    });
    let break_at = walk.damage.as_ref().map_or(walk.keep_end, |(at, _)| *at);
    let why = walk.damage.as_ref().map_or_else(|| "the chain ends".to_string(), |(_, w)| w.clone());
    if let Some(c) = last_valid_commit {
        let reason = format!("{why}, before a valid commit record at offset {c}: synced data is damaged");
        return Verdict::Corrupt { at: break_at, reason };
    }
    if walk.keep_end >= dirty {
        return Verdict::Clean;
    }
    if !is_newest {
        let reason = format!("{why} at {break_at}, after the last commit of a segment that is not the newest");
        return Verdict::Corrupt { at: break_at, reason };
    }
    match crash_consistent(buf, walk.keep_end, dirty) {
        Ok(()) => Verdict::Torn { reason: format!("final batch without a valid commit record ({why} at {break_at})") },
        Err((at, reason)) => Verdict::Corrupt { at, reason },
    }
}

/// Can a power loss during the final batch's write have left `[start, dirty)` as it is? After a
/// crash each sector of the batch holds either what was written or what was there before (zeros:
/// the batch went into the zero-filled tail). So every stretch not covered by a valid record must
/// overlap a sector whose part at or after `start` is all zero; a stretch that runs into the zero
/// tail (the commit record was lost) may do so past `dirty`. Anything else is damage.
pub fn crash_consistent(buf: &[u8], start: usize, dirty: usize) -> Result<(), (usize, String)> {
    let mut records: Vec<(usize, usize, Option<Commit>)> = Vec::new();
    for_each_valid(buf, start, dirty, &mut |at, d| {
        let c = if let Record::Commit(c) = d.record { Some(c) } else { None };
        records.push((at, d.len, c));
    });
    let own_commit = records
        .iter()
        .find(|(at, _, c)| c.is_some_and(|c| c.batch_offset as usize == start && c.batch_len as usize == at - start));
    let batch_end = own_commit.map_or(dirty, |(at, _, _)| *at);
    if let Some((at, len, _)) = own_commit {
        if at + len < dirty {
            return Err((at + len, "bytes after the final batch's commit record".into()));
        }
    }
    let lost = |a: usize, b: usize| -> bool {
        (a / SECTOR..b.div_ceil(SECTOR)).any(|s| {
            let lo = (s * SECTOR).max(start);
            let hi = ((s + 1) * SECTOR).min(buf.len());
            lo < hi && is_zero(&buf[lo..hi])
        })
    };
    let mut cursor = start;
    for (at, len, _) in records.iter().filter(|(at, _, _)| *at < batch_end) {
        if *at > cursor && !lost(cursor, *at) {
            return Err((cursor, garbage(cursor, *at)));
        }
        cursor = cursor.max(at + len);
    }
    if cursor < batch_end {
        let span_end = if own_commit.is_none() { batch_end.max(claimed_end(buf, cursor)) } else { batch_end };
        if !lost(cursor, span_end) {
            return Err((cursor, garbage(cursor, batch_end)));
        }
    }
    Ok(())
}

fn garbage(a: usize, b: usize) -> String {
    format!("bytes [{a}, {b}) of the final batch are neither what was written nor unwritten zeros (not a torn write)")
}

/// Where the record whose header starts at `at` claims to end (header only if implausible).
fn claimed_end(buf: &[u8], at: usize) -> usize {
    if at + HEADER_LEN > buf.len() {
        return buf.len();
    }
    let plen = LE::read_u32(&buf[at..at + 4]) as usize;
    let end = at.saturating_add(record::record_len(plen.min(record::PAYLOAD_MAX_BYTES)));
    if plen <= record::PAYLOAD_MAX_BYTES && end <= buf.len() {
        end
    } else {
        at + HEADER_LEN
    }
}

/// Version 1: the legacy rules (a bad record followed only by non-records in the newest segment
/// is torn; anything else is damage).
fn analyze_legacy(
    buf: &[u8],
    start: usize,
    is_newest: bool,
    stop_at: Option<(usize, String)>,
    apply: &mut Apply<'_>,
) -> Result<Analysis, ApplyError> {
    let dirty = dirty_end(buf);
    let limit = stop_at.as_ref().map_or(buf.len(), |(s, _)| *s);
    let end = super::scan::scan(&buf[..limit], start, |offset, d| {
        apply(offset, &d.record).map_err(|reason| ApplyError { offset, batch_start: offset, reason })
    })?;
    let v = record::SEGMENT_VERSION_LEGACY;
    let verdict = match (&end.tail, stop_at) {
        (_, Some((at, reason))) if end.end >= at => Verdict::Corrupt { at, reason },
        (TailKind::Clean, _) => Verdict::Clean,
        (TailKind::Torn { reason, .. }, _) if is_newest => Verdict::Torn { reason: reason.to_string() },
        (TailKind::Torn { reason, .. }, _) => {
            Verdict::Corrupt { at: end.end, reason: format!("{reason} in a segment that is not the newest") }
        }
        (TailKind::Hole { reason, valid_at }, _) => Verdict::Corrupt {
            at: end.end,
            reason: format!("{reason}, but a valid record follows at offset {valid_at}"),
        },
    };
    Ok(Analysis { version: v, keep_end: end.end, dirty_end: dirty, batch_seq: 0, verdict })
}

/// The highest log position and term that valid records in `[from, to)` show (for the recovery
/// guard): entries, commit records, compactions and segment headers; terms of hard states too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Highest (term, index) by Raft's up-to-date order.
    pub position: Option<(u64, u64)>,
    pub term_max: u64,
}

impl Seen {
    pub fn add(&mut self, record: &Record<'_>) {
        let (pos, term) = match *record {
            Record::Entry { index, term, .. } => (Some((term, index)), term),
            Record::Commit(c) => (Some((c.last_term, c.last_index)), c.hs_term.max(c.last_term)),
            Record::Compact { index, term } => (Some((term, index)), term),
            Record::SegmentHeader(h) => (Some((h.prev_term, h.prev_index)), h.hard_state.term),
            Record::HardState(hs) => (None, hs.term),
            Record::Truncate { .. } => (None, 0),
        };
        if pos > self.position {
            self.position = pos;
        }
        self.term_max = self.term_max.max(term);
    }

    pub fn merge(&mut self, other: Seen) {
        self.position = self.position.max(other.position);
        self.term_max = self.term_max.max(other.term_max);
    }
}

/// What the valid records in `[from, to)` of `buf` show (see [`Seen`]).
pub fn seen_in(buf: &[u8], from: usize, to: usize) -> Seen {
    let mut seen = Seen::default();
    for_each_valid(buf, from, to, &mut |_, d| seen.add(&d.record));
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;
    use crate::storage::record::{encode, record_len, Commit, SegmentHeader, SEGMENT_VERSION};

    /// A v2 segment image: header, then `batches` (entry payload sizes), each closed by a Commit.
    fn image(batches: &[&[usize]]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = vec![0u8; 16384];
        let h = SegmentHeader {
            version: SEGMENT_VERSION,
            seq: 1,
            prev_index: 0,
            prev_term: 0,
            floor_index: 0,
            floor_term: 0,
            hard_state: Default::default(),
            batch_seq: 0,
        };
        let mut off = encode(&mut buf, &Record::SegmentHeader(h));
        let (mut index, mut ends) = (0, Vec::new());
        for (seq, sizes) in batches.iter().enumerate() {
            let start = off;
            for &n in *sizes {
                index += 1;
                let data = vec![0xabu8; n];
                off += encode(&mut buf[off..], &Record::Entry { index, term: 1, kind: EntryKind::Normal, data: &data });
            }
            let c = Commit {
                batch_seq: seq as u64 + 1,
                batch_offset: start as u32,
                batch_len: (off - start) as u32,
                batch_crc: record::batch_crc(&buf[start..off]),
                last_index: index,
                last_term: 1,
                hs_term: 0,
                hs_vote: 0,
            };
            off += encode(&mut buf[off..], &Record::Commit(c));
            ends.push(off);
        }
        (buf, ends)
    }

    fn judge(buf: &[u8]) -> Analysis {
        analyze(buf, true, None, &mut |_, _| Ok(())).expect("no apply errors")
    }

    #[test]
    fn clean_segments_keep_every_committed_batch() {
        let (buf, ends) = image(&[&[10, 20], &[300], &[5]]);
        let a = judge(&buf);
        assert_eq!((a.keep_end, a.batch_seq, a.verdict), (ends[2], 3, Verdict::Clean));
    }

    #[test]
    fn a_lost_sector_in_the_final_batch_is_torn_even_with_valid_records_after_it() {
        let (mut buf, ends) = image(&[&[10], &[200, 200, 200, 200, 200]]);
        let lost = ends[0].div_ceil(SECTOR) * SECTOR;
        buf[lost..lost + SECTOR].fill(0);
        let a = judge(&buf);
        assert_eq!(a.keep_end, ends[0]);
        assert!(matches!(a.verdict, Verdict::Torn { .. }), "{:?}", a.verdict);
    }

    #[test]
    fn garbage_in_the_final_batch_with_its_commit_intact_is_corruption() {
        let (mut buf, ends) = image(&[&[10], &[200, 200, 200]]);
        buf[ends[0] + 100] ^= 1;
        assert!(matches!(judge(&buf).verdict, Verdict::Corrupt { at, .. } if at == ends[0]));
    }

    #[test]
    fn damage_before_a_valid_commit_is_corruption_and_a_later_segment_must_end_clean() {
        let (mut buf, ends) = image(&[&[10], &[20], &[30]]);
        let second = ends[0] + 40;
        buf[second] ^= 4;
        let a = judge(&buf);
        assert_eq!(a.keep_end, ends[0]);
        assert!(matches!(a.verdict, Verdict::Corrupt { .. }), "{:?}", a.verdict);
        let (mut buf, ends) = image(&[&[10], &[20]]);
        buf[ends[1] + 3000] = 1; // a stray byte after the last commit
        let a = analyze(&buf, false, None, &mut |_, _| Ok(())).expect("analyze");
        assert!(matches!(a.verdict, Verdict::Corrupt { .. }), "not the newest: {:?}", a.verdict);
    }

    /// A batch ending `gap` bytes before a page boundary, its confirmation at the boundary, and
    /// one more batch after it (what `Wal::confirm_if_idle` writes). Returns the image and the
    /// end of the last batch.
    fn confirmed_after_a_gap_of(gap: usize) -> (Vec<u8>, usize) {
        let entry_bytes = CONFIRM_ALIGN - gap - record_len(record::SEGMENT_HEADER_PAYLOAD_LEN) - 32 - 72;
        let (mut buf, ends) = image(&[&[entry_bytes]]);
        assert_eq!(ends[0], CONFIRM_ALIGN - gap);
        let commit = |batch_seq: u64, start: usize, end: usize, buf: &[u8], last_index: u64| Commit {
            batch_seq,
            batch_offset: start as u32,
            batch_len: (end - start) as u32,
            batch_crc: record::batch_crc(&buf[start..end]),
            last_index,
            last_term: 1,
            hs_term: 0,
            hs_vote: 0,
        };
        let confirmation = commit(2, ends[0], CONFIRM_ALIGN, &buf, 1);
        let mut off = CONFIRM_ALIGN + encode(&mut buf[CONFIRM_ALIGN..], &Record::Commit(confirmation));
        let start = off;
        let data = [7u8; 16];
        off += encode(&mut buf[off..], &Record::Entry { index: 2, term: 1, kind: EntryKind::Normal, data: &data });
        let last = commit(3, start, off, &buf, 2);
        off += encode(&mut buf[off..], &Record::Commit(last));
        (buf, off)
    }

    #[test]
    fn a_confirmation_after_a_gap_shorter_than_a_record_header_continues_the_chain() {
        // Found by `raftctl chaos`: with 8, 16 or 24 bytes before the page boundary, the header
        // read at the gap overlaps the confirmation, and recovery called the log corrupt.
        for gap in [8, 16, 24, 32, 40, 2048] {
            let (buf, end) = confirmed_after_a_gap_of(gap);
            let a = judge(&buf);
            assert_eq!((a.keep_end, a.batch_seq, &a.verdict), (end, 3, &Verdict::Clean), "gap {gap}");
        }
    }

    #[test]
    fn seen_reports_the_highest_position_by_term_then_index() {
        let (buf, _) = image(&[&[10, 10, 10]]);
        let seen = seen_in(&buf, 0, buf.len());
        assert_eq!(seen.position, Some((1, 3)));
        assert_eq!(record_len(10), 48);
    }
}

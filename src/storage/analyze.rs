//! Judging a segment image at recovery: which records recovery keeps, and whether what follows
//! them is clean, a torn (never-synced) final batch, or damaged synced data. Pure functions over
//! byte slices, shared by `Wal::open` and `raft-dump --verify`. The rules and the argument for
//! them are in the `wal` module doc; this file implements them:
//!
//! Version 2 and 3 segments (they differ only in the fill of unwritten space, see `fill`; below,
//! "unwritten" means zeros in version 2 and the fill pattern in version 3):
//! 1. Walk the record chain from the header. Records are buffered per batch and handed to `apply`
//!    only when the batch's Commit record validates (record CRC, batch offset = end of the
//!    previous batch, length, batch CRC over the bytes, sequence number = previous + 1). A
//!    confirmation (`Wal::confirm_if_idle`) is a Commit of an empty batch (version 3), or in
//!    version 2 a run of zeros up to the next 4096 boundary followed by a Commit record whose
//!    batch is exactly that run. `keep_end` is the end of the last
//!    validated Commit: recovery keeps exactly `[0, keep_end)`.
//! 2. If any Commit record that validates on its own (record CRC and batch CRC over its stated
//!    batch) lies after `keep_end`, the chain break before it is damage in synced data:
//!    `Corrupt` at the break.
//! 3. Otherwise, if bytes that are not unwritten follow `keep_end`: in a segment that is not the newest that is
//!    `Corrupt` (it was synced completely before its successor was created); in the newest it is
//!    the final batch, `Torn` if a crash can explain it and `Corrupt` if not (`crash_consistent`).
//!
//! Version 1 segments (no commit records): today's rules, by `scan`'s tail classification.

use super::fill::Fill;
use super::record::{self, decode, Commit, DecodeError, Decoded, Record, HEADER_LEN, RECORD_ALIGN};
use super::scan::{first_nonzero, TailKind};
use byteorder::{ByteOrder, LittleEndian as LE};

/// Sector size a power loss writes atomically.
const SECTOR: usize = super::fs::SECTOR_BYTES as usize;
/// Alignment of confirmation records.
pub const CONFIRM_ALIGN: usize = super::fs::PAGE_BYTES as usize;

/// What follows the records recovery keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Only unwritten space follows `keep_end`.
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
    /// One past the last byte of the image that is not unwritten space.
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

/// One past the last byte of the image `buf` that is not unwritten space of a segment of
/// format `version` (0 if none).
pub fn dirty_end(version: u32, buf: &[u8]) -> usize {
    Fill::of_segment_version(version).dirty_end(buf)
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
    let (header, header_len) = match decode(buf, 0) {
        Ok(d) => match d.record {
            Record::SegmentHeader(h) => {
                if let Err(reason) = apply(0, &d.record) {
                    return Ok(broken_header(buf, reason));
                }
                (h, d.len)
            }
            _ => return Ok(broken_header(buf, "the first record is not a segment header".into())),
        },
        Err(e) => return Ok(broken_header(buf, format!("bad segment header: {e}"))),
    };
    if header.version == record::SEGMENT_VERSION_LEGACY {
        return analyze_legacy(buf, header_len, is_newest, stop_at, apply);
    }
    let fill = Fill::of_segment_version(header.version);
    let dirty = fill.dirty_end(buf);
    let walk = walk_chain(buf, fill, header_len, header.batch_seq, dirty, stop_at, apply)?;
    let verdict = judge_rest(buf, fill, &walk, dirty, is_newest);
    Ok(Analysis { version: header.version, keep_end: walk.keep_end, dirty_end: dirty, batch_seq: walk.seq, verdict })
}

/// With the header unreadable the fill is unknown: `dirty_end` is reported as for zeros.
fn broken_header(buf: &[u8], reason: String) -> Analysis {
    let dirty = dirty_end(record::SEGMENT_VERSION_LEGACY, buf);
    Analysis { version: 0, keep_end: 0, dirty_end: dirty, batch_seq: 0, verdict: Verdict::Corrupt { at: 0, reason } }
}

/// Where the chain walk of a version 2 or 3 segment stopped.
struct Walk {
    keep_end: usize,
    seq: u64,
    /// First offset at or after `keep_end` where the chain is broken, and why (None: only
    /// unwritten space follows).
    damage: Option<(usize, String)>,
    /// The break was imposed by `stop_at`.
    forced: bool,
}

fn walk_chain(
    buf: &[u8],
    fill: Fill,
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
            // Only unwritten space follows.
            Err(_) if pos >= dirty => return Ok(Walk { keep_end: batch_start, seq, damage: None, forced: false }),
            // A confirmation's gap can be shorter than a record header: then the header window
            // at `pos` reaches into the confirmation and does not decode as unwritten space.
            Err(e) => match confirmation_at(buf, fill, pos, batch_start, seq) {
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

/// A version 2 confirmation: at the next 4096 boundary after `pos`, its batch the zero gap
/// `[pos, at)`.
fn confirmation_at<'a>(
    buf: &'a [u8],
    fill: Fill,
    pos: usize,
    batch_start: usize,
    seq: u64,
) -> Option<(usize, Decoded<'a>)> {
    let at = pos.div_ceil(CONFIRM_ALIGN) * CONFIRM_ALIGN;
    // Version 3 writes confirmations right after the batch (no gap: a gap of unwritten space
    // would read like a lost sector of a torn batch).
    let gap_ok = fill == Fill::Zeros && fill.matches(pos as u64, &buf[pos..at.min(buf.len())]);
    if batch_start != pos || at == pos || at >= buf.len() || !gap_ok {
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

/// True if Commit `c` at `at` describes a batch that ends right before it and starts at or after
/// `keep_end` (as every Commit the WAL writes does): a record that only looks like one, inside an
/// entry's data that a torn write exposed, would have to match its own position as well.
fn describes_bytes_before(at: usize, c: &Commit, keep_end: usize) -> bool {
    let start = c.batch_offset as usize;
    start >= keep_end && start.checked_add(c.batch_len as usize) == Some(at)
}

/// Steps 2 and 3 of the module doc (step 2 also: a Commit record of a batch after the next one,
/// whatever its own batch's state, proves the next batch was synced).
fn judge_rest(buf: &[u8], fill: Fill, walk: &Walk, dirty: usize, is_newest: bool) -> Verdict {
    if let Some((at, why)) = walk.damage.as_ref().filter(|_| walk.forced) {
        return Verdict::Corrupt { at: *at, reason: why.clone() };
    }
    let (mut last_valid_commit, mut later_batch) = (None, None);
    for_each_valid(buf, walk.keep_end, dirty, &mut |at, d| {
        if let Record::Commit(c) = d.record {
            if commit_validates(buf, at, &c) {
                last_valid_commit = Some(at);
            } else if c.batch_seq > walk.seq + 1 && describes_bytes_before(at, &c, walk.keep_end) {
                later_batch.get_or_insert((at, c.batch_seq));
            }
        }
    });
    let break_at = walk.damage.as_ref().map_or(walk.keep_end, |(at, _)| *at);
    let why = walk.damage.as_ref().map_or_else(|| "the chain ends".to_string(), |(_, w)| w.clone());
    if let Some(c) = last_valid_commit {
        let reason = format!("{why}, before a valid commit record at offset {c}: synced data is damaged");
        return Verdict::Corrupt { at: break_at, reason };
    }
    // Batch n+1's Commit is written only after batch n's sync returned: a later batch's Commit
    // record, even one whose own batch is damaged, proves that batch seq + 1 was synced.
    if let Some((c, later)) = later_batch {
        let next = walk.seq + 1;
        let reason = format!("{why}, before the commit record of batch {later} at offset {c}: batch {next} was synced");
        return Verdict::Corrupt { at: break_at, reason };
    }
    if walk.keep_end >= dirty {
        return Verdict::Clean;
    }
    if !is_newest {
        let reason = format!("{why} at {break_at}, after the last commit of a segment that is not the newest");
        return Verdict::Corrupt { at: break_at, reason };
    }
    match crash_consistent(buf, fill, walk.keep_end, dirty) {
        Ok(()) => Verdict::Torn { reason: format!("final batch without a valid commit record ({why} at {break_at})") },
        Err((at, reason)) => Verdict::Corrupt { at, reason },
    }
}

/// Can a power loss during the final batch's write have left `[start, dirty)` as it is? After a
/// crash each sector of the batch holds either what was written or what was there before (the
/// fill: the batch went into the unwritten tail). So every stretch not covered by a valid record
/// must overlap a sector whose part at or after `start` is all fill; a stretch that runs into the
/// unwritten tail (the commit record was lost) may do so past `dirty`, as far as its header claims
/// (`claimed_end`). Anything else is damage.
///
/// With the zero fill of version 2 a zeroed sector of a synced batch passes this test (the
/// residual window); with the pattern of version 3 it cannot, since damage never produces the
/// pattern (`fill`).
pub fn crash_consistent(buf: &[u8], fill: Fill, start: usize, dirty: usize) -> Result<(), (usize, String)> {
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
            lo < hi && fill.matches(lo as u64, &buf[lo..hi])
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
    format!("bytes [{a}, {b}) of the final batch are neither what was written nor unwritten space (not a torn write)")
}

/// Where the record whose header starts at `at` claims to end (header only if implausible).
/// The length field is not checked apart from the rest of the record, so one flipped bit in it
/// could claim a stretch that reaches the unwritten tail. Only an Entry's length is free, and a
/// record whose own Commit is missing is, with one error at a time, the Commit itself (an entry
/// damaged before an intact Commit is judged by that Commit): so a fixed-size record type with
/// the wrong length claims only its header.
fn claimed_end(buf: &[u8], at: usize) -> usize {
    if at + HEADER_LEN > buf.len() {
        return buf.len();
    }
    let plen = LE::read_u32(&buf[at..at + 4]) as usize;
    let fixed = match record::RecordType::from_u8(buf[at + 8]) {
        Some(record::RecordType::Commit) => Some(record::COMMIT_PAYLOAD_LEN),
        Some(record::RecordType::HardState) => Some(record::HARD_STATE_PAYLOAD_LEN),
        Some(record::RecordType::Truncate | record::RecordType::Compact) => Some(0),
        _ => None,
    };
    let end = at.saturating_add(record::record_len(plen.min(record::PAYLOAD_MAX_BYTES)));
    if fixed.is_none_or(|n| n == plen) && plen <= record::PAYLOAD_MAX_BYTES && end <= buf.len() {
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
    let dirty = dirty_end(record::SEGMENT_VERSION_LEGACY, buf);
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

/// The fill of unwritten space in the segment image `buf`, by its header's version (zeros if the
/// header is unreadable).
pub fn image_fill(buf: &[u8]) -> Fill {
    match decode(buf, 0).map(|d| d.record) {
        Ok(Record::SegmentHeader(h)) => Fill::of_segment_version(h.version),
        _ => Fill::Zeros,
    }
}

/// True if the segment image `buf` ends, after `from`, in a valid record followed only by
/// unwritten space: then (with one error at a time) the highest position its valid records show
/// is where the log ended, an upper bound for the recovery guard. Damage at the very end (a zeroed
/// last page, a flipped bit in the last record) leaves no such bound: the lost records may have
/// reached further than anything readable shows.
pub fn ends_in_a_valid_record(buf: &[u8], from: usize) -> bool {
    let dirty = image_fill(buf).dirty_end(buf);
    let mut end = from;
    for_each_valid(buf, from, dirty, &mut |at, d| end = end.max(at + d.len));
    end >= dirty
}

/// What the valid records in `[from, to)` of the segment image `buf` show (see [`Seen`]).
pub fn seen_in(buf: &[u8], from: usize, to: usize) -> Seen {
    let mut seen = Seen::default();
    let to = to.min(image_fill(buf).dirty_end(buf));
    for_each_valid(buf, from, to, &mut |_, d| seen.add(&d.record));
    seen
}

#[cfg(test)]
#[path = "analyze_tests.rs"]
mod tests;
